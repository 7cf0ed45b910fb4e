from django.apps import AppConfig


class MockupApiConfig(AppConfig):
    name = "mockup_api"
    verbose_name = "Built-in mockup API"
