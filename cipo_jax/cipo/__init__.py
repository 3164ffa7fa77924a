"""CIPO maths: the pure loss (`loss`) and the correction stream's host-side logic (`correction`)."""
