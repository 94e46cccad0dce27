"""Training state for exact resume (atomic, last K kept, no pickle on load)."""
from .state import (CheckpointConfig, CheckpointManager, capture_rng, checkpoint_dir, load_state, resolve_resume,
                    restore_rng, save_atomic, sha256_file, write_atomic)

__all__ = ["CheckpointConfig", "CheckpointManager", "capture_rng", "checkpoint_dir", "resolve_resume", "load_state", "restore_rng", "save_atomic", "sha256_file", "write_atomic"]
