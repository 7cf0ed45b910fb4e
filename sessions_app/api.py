"""`POST /api/sessions` and `DELETE /api/sessions/current`."""

from __future__ import annotations

from django.middleware.csrf import get_token
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app.actions import do_revoke_token, do_start_session
from sessions_app.authentication import (
    SESSION_COOKIE_KEY,
    bearer_token_of,
    booth_session_of,
    remember_in_cookie,
)
from sessions_app.timefmt import iso_ms


class SessionsView(APIView):
    # Starting a session needs no earlier one, and carries no CSRF token yet.
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Start a booth session (sets the session and CSRF cookies too)",
        request=None,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        started = do_start_session()
        remember_in_cookie(request._request, started.session)
        get_token(request._request)  # sets the csrftoken cookie
        body = {
            "sessionId": str(started.session.pk),
            "token": started.token,
            "expiresAt": iso_ms(started.expires_at),
        }
        return Response(body, status=status.HTTP_201_CREATED)


class CurrentSessionView(APIView):
    @extend_schema(
        summary="End the caller's access: revoke the bearer token, or forget the cookie",
        request=None,
        responses={204: None},
    )
    def delete(self, request: Request) -> Response:
        booth_session_of(request)
        token = bearer_token_of(request._request)
        if token is not None:
            do_revoke_token(token)
        else:
            request._request.session.pop(SESSION_COOKIE_KEY, None)
        return Response(status=status.HTTP_204_NO_CONTENT)
