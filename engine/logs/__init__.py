"""Logs: the log line, its stores, redaction, the live bus and the writer (DESIGN §7)."""

from __future__ import annotations

from engine.logs.bus import LiveBus, Subscription
from engine.logs.model import SERVER_STEP, STDERR, STDOUT, LogLine
from engine.logs.redact import MASK, Redactor
from engine.logs.store import JsonlLogStore, LogStore
from engine.logs.writer import JobLogWriter, StepLog

__all__ = [
    "MASK",
    "SERVER_STEP",
    "STDERR",
    "STDOUT",
    "JobLogWriter",
    "JsonlLogStore",
    "LiveBus",
    "LogLine",
    "LogStore",
    "Redactor",
    "StepLog",
    "Subscription",
]
