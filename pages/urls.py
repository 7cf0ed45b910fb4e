from django.urls import path

from pages import views

urlpatterns = [
    path("", views.photobooth, name="photobooth"),
    path("mockups/", views.mockups, name="mockups"),
    path("mockups/<uuid:task_id>/", views.mockup_result, name="mockup-result"),
    path("history/", views.history, name="history"),
]
