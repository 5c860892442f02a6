from dataclasses import dataclass

from eventbus import event_type


@event_type("greeting.sent", version=1)
@dataclass(frozen=True)
class GreetingSent:
    name: str
