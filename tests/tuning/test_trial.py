"""tuning.trial: the shared objects of a search reach each process once, through Ray."""

from __future__ import annotations

import pickle

import numpy as np
import ray

from tuning import trial
from tuning.trial import SharedHandle


def test_a_process_fetches_the_shared_objects_once_and_only_the_current_ones(ray_session) -> None:
    first = ray.put({"control": np.arange(5)})
    handle = SharedHandle(first)
    got = handle.get()
    np.testing.assert_array_equal(got["control"], np.arange(5))
    again = pickle.loads(pickle.dumps(handle))  # as a trial receives it
    assert again.get() is got  # cached: not fetched again
    second = ray.put({"control": np.ones(2)})
    assert SharedHandle(second).get()["control"].tolist() == [1.0, 1.0]
    assert list(trial._CACHE) == [second.hex()]  # one search per process: the old one is dropped
