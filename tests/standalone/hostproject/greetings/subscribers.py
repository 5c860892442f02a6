import sys

from eventbus import Envelope, subscriber
from greetings.models import Greeting

# The event bus's home project and its apps: none of them may be loaded in this project's processes.
HOST_MODULES = ("project", "signups", "notifications", "analytics", "telemetry", "ops", "devinbox", "lab")


@subscriber("greeting.sent", name="greetings.record", queue="greetings", label="record")
def record(event: Envelope) -> None:
    loaded = sorted(name for name in HOST_MODULES if name in sys.modules)
    Greeting.objects.create(event_id=event.id, name=event.payload.name, host_modules=",".join(loaded))
