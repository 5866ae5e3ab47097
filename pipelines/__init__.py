"""Pure media code: arrays, bytes and frozen records in and out; nothing of ``worker``."""
