__version__ = "0.1.0"
# The public API, chapter by chapter (each module is exported from its notebook in nbs/).
# `optbook.experiments` is the command line (`python -m optbook.experiments`), so it is not imported here.
from .core import *
from .data import *
from .models import *
from .learner import *
from .sgd import *
from .momentum import *
from .rmsprop import *
from .adam import *
from .weight_decay import *
from .schedules import *
from .lr_finder import *
from .explorers import *
from .clipping import *
from .lars import *
from .radam import *
from .widgets import *
from .fused import *
from .lion import *
from .adafactor import *
from .muon import *
from .schedule_free import *

def _public_api():
    """`__all__`, derived from the chapters rather than kept by hand: a new chapter joins it by its `from .x import *` line.
    The top level is the classes and functions each chapter exports (its nbdev `__all__`): the optimizers, the engine
    (`Optimizer`, `Stepper`, `stepper`, `Hyper`, ...), schedules, `lr_find`, `param_groups`, the `Learner` and its callbacks,
    the data and model helpers. Instances stay in their chapter module: steppers (the pieces optimizers are built from,
    `optbook.adam.ema_grad`), gradient transforms, stepper lists and data tables (`optbook.learner.EXPERIMENTS`). They
    remain attributes here, so `optbook.ema_grad` keeps working, but `from optbook import *` does not spill them (nor the
    submodules) into a user's namespace. The names follow fastai's where the book follows fastai (`Learner`, `Callback`,
    `Adam`, ...): import one of the two libraries by name, not both with `*`."""
    import types
    g, names = globals(), {}
    for mod in [m for m in g.values() if isinstance(m, types.ModuleType) and m.__name__.startswith(__name__ + '.')]:
        for n in getattr(mod, '__all__', ()):
            obj = getattr(mod, n)
            if not n.startswith('_') and g.get(n) is obj and isinstance(obj, (type, types.FunctionType)): names[n] = None
    return list(names)

__all__ = _public_api()
del _public_api
