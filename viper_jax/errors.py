"""Errors raised by several layers (training loops, the agent), kept below all of them."""
from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf metric (or reward); the message says where the last good
  checkpoint is."""
