"""Data files: π*'s retention data (.npz); later datasets and start-state stores."""
