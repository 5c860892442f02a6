from django.apps import AppConfig


class FaultappConfig(AppConfig):
    name = "tests.faults.faultapp"
    label = "faultapp"
    verbose_name = "Fault-injection test subscribers"
