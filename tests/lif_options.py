"""The LIF option grid shared by the kernel tests: every (v_reset, decay_input, detach_reset,
learnable tau) combination the neuron supports (v_reset None: soft reset)."""

import itertools

LIF_OPTIONS = list(
    itertools.product(
        [0.0, None, -0.2],  # v_reset (None: soft reset)
        [True, False],  # decay_input
        [True, False],  # detach_reset
        [False, True],  # learnable tau
    )
)
