"""Fit the fixed costs a roofline does not see, and test the fit honestly.

What a step takes beyond its roofline time is modelled, per layer, as a cost per step (Python and op
dispatch), per token (elementwise ops) and per decoding sequence (gathering its paged KV). The three
constants come from a non-negative least-squares fit on relative error, and every step is predicted
from a fit to the *other* steps (leave-one-out), so no step predicts itself.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from .hardware import Device


@dataclass(frozen=True)
class StepSample:
    tokens: int           # tokens in the step
    decodes: int          # decoding sequences among them
    measured: float       # seconds, the engine's
    roofline: float       # seconds, the cost model's without fixed costs


@dataclass(frozen=True)
class FixedCosts:
    per_step: float       # seconds per layer
    per_token: float
    per_sequence: float

    def on(self, device: Device) -> Device:
        return replace(device, layer_overhead=self.per_step, token_overhead=self.per_token,
                       sequence_overhead=self.per_sequence)


def fit_fixed_costs(samples: list[StepSample], layers: int) -> FixedCosts:
    """Least squares of the relative error, each constant >= 0: the best over every subset of constants
    left free (three constants, eight subsets: no solver library needed)."""
    a = np.array([[layers, layers * s.tokens, layers * s.decodes] for s in samples], dtype=float)
    y = np.array([s.measured - s.roofline for s in samples])
    weights = 1.0 / np.array([s.measured for s in samples])
    a, y = a * weights[:, None], y * weights
    best, best_error = np.zeros(3), float(np.sum(y ** 2))
    for free in itertools.product((False, True), repeat=3):
        columns = [i for i in range(3) if free[i]]
        if not columns:
            continue
        solution = np.linalg.lstsq(a[:, columns], y, rcond=None)[0]
        if (solution < 0).any():
            continue
        x = np.zeros(3)
        x[columns] = solution
        error = float(np.sum((a @ x - y) ** 2))
        if error < best_error:
            best, best_error = x, error
    return FixedCosts(*(float(v) for v in best))


def leave_one_out(samples: list[StepSample], layers: int) -> list[FixedCosts]:
    """For each sample, the fixed costs fitted on all the other samples."""
    return [fit_fixed_costs(samples[:i] + samples[i + 1:], layers) for i in range(len(samples))]
