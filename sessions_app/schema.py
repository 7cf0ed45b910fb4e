"""OpenAPI descriptions of our authentication schemes (drf-spectacular extensions)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "sessions_app.authentication.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The token from POST /api/sessions; cookies are ignored and no CSRF.",
        }


class BoothCookieScheme(OpenApiAuthenticationExtension):
    target_class = "sessions_app.authentication.BoothCookieAuthentication"
    name = "sessionCookie"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": (
                "Browser session; unsafe methods need X-CSRFToken from the csrftoken cookie."
            ),
        }
