"""HTTP routes of the built-in mockup API, mounted at /mockup-api/ (contract section 6)."""

urlpatterns: list = []
