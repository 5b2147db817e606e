"""Shared helpers: errors, checkpoints, image reading, default data, feature taps."""
