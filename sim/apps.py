from django.apps import AppConfig


class SimConfig(AppConfig):
    name = "sim"
    verbose_name = "Simulation and demo: the loop run by itself, and a demo project"
