"""Online learning of the discriminator D (paper Eq. 7-8, section 3.4): samples, memory, solver, swap.

What happens when
-----------------
* Frame 1 (:meth:`OnlineLearner.initialize`): D's conv is set to the PCA of the frame's features,
  fc1 is small random, fc2 zero; then conv + fc are fitted together by Gauss-Newton with
  conjugate gradient (``init_gn_iterations`` x ``init_cg_iterations``) on 200 positives and 1000
  negatives, L2 loss, weight decay lambda (Eq. 8).  The conv is fixed from then on, so the memory
  stores conv activations (1152 numbers a sample instead of 13824), which keeps 100 frames of
  samples small and spares every later solve the conv.  In async mode that 1x1 conv runs on the
  worker at the next solve, not on the hot path.
* Every frame the tracker may hand samples over (:meth:`add_samples`: cheap, on the hot path):
  n+ positives and n- negatives around the tracked box plus hard negatives (features of distractor
  proposals with high coarse scores and low IoU to the tracked box, labelled 0).  As in MDNet only
  reliable frames are kept: a box the tracker is unsure of may be the distractor, so its
  "positives" would teach D the wrong object.
* MDNet's short-long strategy (:meth:`maybe_update`): a long-term update every K frames
  (positives from the last ``long_term_frames`` reliable frames, negatives from the last
  ``short_term_frames``), and a short-term update at once when the confidence drops below
  ``short_term_threshold`` (positives and negatives from the last ``short_term_frames`` frames).
  The first frame's samples are always part of the training set; past ``update_max_positives`` /
  ``update_max_negatives`` whole memory frames are taken evenly spaced over the memory (a full
  memory of ~10,000 samples takes seconds to solve on a CPU).  Updates touch fc1 and fc2 only,
  warm-started from the newest weights (``update_gn_iterations`` x ``update_cg_iterations``).

Collect, solve, swap
--------------------
The hot path reads D's fc weights as one immutable :class:`~cract_core.discriminator.FCWeights`
reference.  A solve never writes into a published snapshot; it builds a new one.  Modes:

* ``"sync"``: :meth:`maybe_update` solves in the caller's thread and swaps at once (deterministic;
  for evaluation).
* ``"async"``: :meth:`maybe_update` hands a request to one worker thread (on CUDA with its own
  stream) and returns.  Newest request wins: a request not yet started (or held at
  ``solve_gate``) is replaced by a newer one, so there is never more than one solve running and
  never a backlog.  The finished snapshot is
  parked in a slot; the next :meth:`begin_frame` swaps it in (one reference assignment between
  frames, so one frame never mixes two versions).
* ``"async"`` with ``cfg.async_swap_delay = L >= 0`` (deterministic test setting): the solve still
  runs on the worker, but requests queue in order and the snapshot of an update requested at frame
  t is swapped in exactly at ``begin_frame(t + L)`` (for L = 0: before ``maybe_update(t)`` returns),
  waiting for the solve if it is not done.  This gives exactly the scores of a synchronous learner
  whose update is applied L frames later.

No lock is held while a network runs: ``self._lock`` only guards the hand-over of requests and
results.  ``solve_gate`` (a threading.Event) makes the worker wait before each solve, so tests and
the ROS node can hold updates back; ``solve_hook`` is called by the worker before each solve (tests
use it to make solves slow).  :meth:`close` stops and joins the worker.
"""
# One module per part: samples (where the boxes come from), problem (Eq. 8 as a least-squares
# problem), memory (the frames of samples kept between updates), learner (the OnlineLearner that
# initialises, collects, solves and swaps).
from .learner import OnlineLearner, UpdateKind, UpdateRecord
from .memory import MAX_UNPROJECTED
from .problem import DiscriminatorProblem, class_balanced_weights
from .samples import sample_boxes

__all__ = ["DiscriminatorProblem", "MAX_UNPROJECTED", "OnlineLearner", "UpdateKind", "UpdateRecord",
           "class_balanced_weights", "sample_boxes"]
