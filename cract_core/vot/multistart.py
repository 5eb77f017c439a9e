"""VOT2020+'s multistart (anchor-based) experiment, runnable with vot-toolkit 0.9.0.

vot-toolkit 0.9.0's ``multistart`` experiment cannot run a tracker: it hands the runtime an
ObjectStatus where a Region is expected ("ObjectQuery.state must be a Region"), starts every
anchor's run at the anchor's index *inside* a sub-sequence that already begins there, and stores
ObjectStatus objects (and per-query times) where the trajectory wants regions (and per-frame
times).  :class:`MultiStartExperiment` is the same experiment with those three fixed; a stack names
it by its class path (``type: cract_core.vot.multistart.MultiStartExperiment``, vot-toolkit imports
it), and the toolkit's analyses (``multistart_eao_score``, ``multistart_average_ar``) read its
results as they are.
"""
from __future__ import annotations

from typing import Callable, Optional

from vot.dataset import Sequence
from vot.dataset.proxy import FrameMapSequence
from vot.experiment.multistart import MultiStartExperiment as _ToolkitMultiStart
from vot.experiment.multistart import find_anchors
from vot.region import Special
from vot.tracker import ObjectQuery, Tracker, Trajectory


class MultiStartExperiment(_ToolkitMultiStart):
    """vot-toolkit's multistart experiment, each anchor's run started on the anchor frame."""

    def execute(self, tracker: Tracker, sequence: Sequence, force: bool = False,
                callback: Optional[Callable[[float], None]] = None) -> None:
        results = self.results(tracker, sequence)
        forward, backward = find_anchors(sequence, self.anchor)
        if not forward and not backward:
            raise RuntimeError("Sequence does not contain any anchors")
        runs = [(f, False) for f in forward] + [(f, True) for f in backward]
        with self._get_runtime(tracker, sequence) as runtime:
            for done, (i, reverse) in enumerate(runs, 1):
                name = f"{sequence.name}_{i:08d}"
                if Trajectory.exists(results, name) and not force:
                    continue
                frames = list(reversed(range(0, i + 1))) if reverse else list(range(i, len(sequence)))
                proxy = FrameMapSequence(sequence, frames)
                query = ObjectQuery(self._get_initialization(proxy, 0).region, {}, 0)  # frame 0 of the run
                status = runtime.run(proxy, [query])
                trajectory = Trajectory(len(proxy))
                trajectory.set(0, Special(Trajectory.INITIALIZATION), {"time": status.times[0]})
                for frame in range(1, len(proxy)):
                    obj = status.objects[0][frame]
                    trajectory.set(frame, obj.region, dict(obj.properties or {}, time=status.times[frame]))
                trajectory.write(results, name)
                if callback:
                    callback(done / len(runs))
