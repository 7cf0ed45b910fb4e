from django.urls import path

from sessions_app import api

urlpatterns = [
    path("api/sessions", api.SessionsView.as_view(), name="sessions"),
    path("api/sessions/current", api.CurrentSessionView.as_view(), name="session-current"),
]
