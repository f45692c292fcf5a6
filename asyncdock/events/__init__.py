"""The event bus: every subsystem publishes typed messages; /events, restart policies and the
Python API subscribe."""
from .bus import EventBus, Subscription, SubscriberLagged
from .models import Actor, Event, LayerProgress
from .sink import EventSink

__all__ = ["EventBus", "EventSink", "Subscription", "SubscriberLagged", "Actor", "Event", "LayerProgress"]
