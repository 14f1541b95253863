"""The wire format: envelope, message types and the codec (DESIGN §4)."""

from __future__ import annotations

from closedloop.messages.base import MESSAGE_TYPES, ArraySpec, Message, message_class, register
from closedloop.messages.codec import (
    MALFORMED, OVERSIZED, REJECTION_KINDS, UNKNOWN_TYPE, WRONG_SCHEMA, CodecError, Decoded, as_bytes,
    decode, encode, split_routing, with_routing,
)
from closedloop.messages.envelope import ALLOWED_DTYPES, MAX_MESSAGE_BYTES, SCHEMA_VERSION, Envelope
from closedloop.messages.types import (
    Accepted, BlockRequest, BlockStatus, Error, FitRequest, Heartbeat, ModelUpdated, PredictRequest, Predictions,
    Responses, SpikeBatch, StimulusShown, SyncEvent, SynthesizeRequest, SynthesizeResult, describe,
)

__all__ = [
    "ALLOWED_DTYPES", "MAX_MESSAGE_BYTES", "MESSAGE_TYPES", "SCHEMA_VERSION", "MALFORMED", "OVERSIZED",
    "REJECTION_KINDS", "UNKNOWN_TYPE", "WRONG_SCHEMA", "Accepted", "ArraySpec", "BlockRequest", "BlockStatus",
    "CodecError", "Decoded", "Envelope", "Error", "FitRequest", "Heartbeat", "Message", "ModelUpdated",
    "PredictRequest", "Predictions", "Responses", "SpikeBatch", "StimulusShown", "SyncEvent",
    "SynthesizeRequest", "SynthesizeResult", "as_bytes", "decode", "describe", "encode",
    "message_class", "register", "split_routing", "with_routing",
]
