"""Input sources: how records of one input format become the worker's domain changes."""

from segstream.stream.sources.base import InputSource
from segstream.stream.sources.change_capture import ChangeCapture
from segstream.stream.sources.json_topics import JsonTopics

__all__ = ["ChangeCapture", "InputSource", "JsonTopics"]
