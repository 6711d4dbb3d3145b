"""Step time of every optimizer of the book: optbook's per-tensor, foreach and fused paths against torch's (and timm's).

Usage: python benchmarks/bench_fused.py [--quick] [--sets resnet18,transformer,tiny] [--only NAMES|after-adam] [--device cpu|cuda] [--threads 1]
For each parameter set and optimizer it prints each implementation's median milliseconds per step and its ratio to the
reference (torch's fused kernel where torch has one, else the fastest of torch's and timm's paths), all measured in one
interleaved run (the cases take turns in every repeat, so load changes hit them alike), the spread of each ratio over
the repeats (the noise), and the ratio of optbook's fastest path to the memory-bandwidth bound: the words each parameter
reads and writes per step, at the best streaming bandwidth (a copy and an in-place scale of the same size) measured among the cases of the same interleaved run. Timings belong here, never in tests.
`--markdown` prints the tables as Markdown (what the chapter and the note show).
"""
import argparse, inspect, math, statistics, time, warnings
import torch
import optbook

def resnet18_shapes():
    "torchvision's ResNet-18: 62 tensors, 11.7M numbers"
    from torchvision.models import resnet18  # benchmark-only dependency
    return [tuple(p.shape) for p in resnet18().parameters()]

def transformer_shapes(layers=45, d=232, vocab=4096, ctx=512):
    "A GPT-like stack: 12 tensors a layer (attention, MLP, two LayerNorms), embeddings, final norm and head: 550 tensors, about 30M numbers"
    layer = [(3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,), (d,), (d,)]
    return [(vocab, d), (ctx, d)] + layer * layers + [(d,), (d,), (vocab, d), (vocab,), (d, d), (d,), (d,), (d,)]

def tiny_shapes(n=2000, seed=0):
    "2000 small tensors (16 to 1024 numbers): where per-call overhead, not memory, sets the step time"
    gen = torch.Generator().manual_seed(seed)
    return [(int(k),) for k in torch.randint(16, 1025, (n,), generator=gen)]

SETS = {'resnet18': resnet18_shapes, 'transformer': transformer_shapes, 'tiny': tiny_shapes}

# optimizer name -> (optbook class, its keywords, torch class or None, words read+written per parameter by one pass, timm factory or None)
def optimizers():
    import timm.optim as timm_optim
    T = torch.optim
    return {
        'SGD momentum': (optbook.SGD, dict(lr=1e-3, momentum=0.9), T.SGD, 5, None),
        'SGD nesterov': (optbook.SGD, dict(lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4), T.SGD, 5, None),
        'SGDW': (optbook.SGDW, dict(lr=1e-3, momentum=0.9, weight_decay=1e-4), None, 5, timm_optim.SGDW),
        'RMSprop': (optbook.RMSprop, dict(lr=1e-3), T.RMSprop, 5, None),
        'RMSprop momentum': (optbook.RMSprop, dict(lr=1e-3, momentum=0.9), T.RMSprop, 7, None),
        'RMSprop centered': (optbook.RMSprop, dict(lr=1e-3, centered=True, momentum=0.9), T.RMSprop, 9, None),
        'RMSpropW': (optbook.RMSpropW, dict(lr=1e-3, weight_decay=1e-2), T.RMSprop, 5, None),  # torch has no RMSpropW: its RMSprop with L2 decay is the reference
        'Adam': (optbook.Adam, dict(lr=1e-3), T.Adam, 7, None),
        'Adam amsgrad': (optbook.Adam, dict(lr=1e-3, amsgrad=True), T.Adam, 9, None),
        'AdamW': (optbook.AdamW, dict(lr=1e-3, weight_decay=1e-2), T.AdamW, 7, timm_optim.AdamWLegacy),
        'RAdam': (optbook.RAdam, dict(lr=1e-3), T.RAdam, 7, timm_optim.RAdamLegacy),
        'LARS': (optbook.LARS, dict(lr=1e-1, momentum=0.9, weight_decay=1e-4), None, 7, timm_optim.Lars),  # the norms read theta and g once more
        'LAMB': (optbook.LAMB, dict(lr=1e-3, weight_decay=1e-2), None, 11, timm_optim.Lamb),  # the clip's norm reads g; the trust ratio needs a second pass (theta, m, v read, theta written)
    }

# chapter 13's optimizers: name -> (optbook class, keywords, torch class or None, words, other reference or None, shapes it takes)
AFTER_ADAM = ('Lion', 'Adafactor', 'Muon', 'AdamWScheduleFree', 'SGDScheduleFree')

def _train_mode(cls):
    "A factory that puts a schedule-free optimizer in train mode, as a training loop must before its first step"
    def make(ps, **kw):
        opt = cls(ps, **kw); opt.train(); return opt
    return make

def after_adam():
    import timm.optim as timm_optim, schedulefree
    matrices = lambda shapes: [s for s in shapes if len(s) == 2]  # Muon takes 2-D weights only (torch refuses others)
    return {
        'Lion': (optbook.Lion, dict(lr=1e-4, weight_decay=1e-1), None, 5, timm_optim.Lion),  # theta, m read and written, g read
        'Adafactor': (optbook.Adafactor, dict(lr=1e-2), torch.optim.Adafactor, 3, None),  # theta read and written, g read; the factored state is O(n + m)
        'Muon': (optbook.Muon, dict(lr=1e-3), torch.optim.Muon, 5, None, matrices),  # as SGD momentum; Newton-Schulz's matrix products, not memory, set its time
        'AdamWScheduleFree': (_train_mode(optbook.AdamWScheduleFree), dict(lr=2.5e-3), None, 9, _train_mode(schedulefree.AdamWScheduleFree)),  # y, z, v read and written, g read
        'SGDScheduleFree': (_train_mode(optbook.SGDScheduleFree), dict(lr=1e-1), None, 5, _train_mode(schedulefree.SGDScheduleFree)),  # y, z read and written, g read
    }

def _has_paths(make, kw) -> tuple:
    "Whether an optbook optimizer has a multi-tensor path and a fused one (Muon's Newton-Schulz has neither)"
    opt = make([{'params': [torch.nn.Parameter(torch.zeros(2, 2))]}], **kw)
    return opt.has_foreach, type(opt).fused_step is not None

def cases(name, spec):
    "The implementations timed for one optimizer: label -> factory(params)"
    ob, kw, tc, _, other = spec[:5]
    path = lambda ps, **flags: ob([{'params': ps, **flags}], **kw)  # the path flags as group keys: LARS's signature has no `fused`
    foreach, fused = _has_paths(ob, kw)
    out = {'optbook per-tensor': lambda ps: path(ps, foreach=False)}
    if foreach: out['optbook foreach'] = lambda ps: path(ps, foreach=True, fused=None)
    if fused: out['optbook fused'] = lambda ps: path(ps, fused=True)
    if tc is not None and 'foreach' in inspect.signature(tc).parameters:
        out['torch for-loop'] = lambda ps: tc(ps, **kw, foreach=False)
        out['torch foreach'] = lambda ps: tc(ps, **kw, foreach=True)
        if tc in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW): out['torch fused'] = lambda ps: tc(ps, **kw, fused=True)
    elif tc is not None: out['torch for-loop'] = lambda ps: tc(ps, **kw)  # one path only (torch's Muon)
    if other is not None: out[OTHER.get(name, 'timm')] = lambda ps: other(ps, **kw)
    return out

OTHER = {'AdamWScheduleFree': 'schedulefree', 'SGDScheduleFree': 'schedulefree'}  # the column of a reference outside torch (default timm)

def make_params(shapes, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]
    for p in ps: p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-2
    return ps

class Copy:
    "A pseudo-optimizer whose `step` streams `numel` float32 numbers through a copy and an in-place scale (2 words per number each): timed among the cases, it measures the bandwidth under the same load"
    words = 4
    def __init__(self, numel, device): self.a, self.b = torch.randn(numel, device=device), torch.randn(numel, device=device)
    def step(self): self.b.copy_(self.a); self.b.mul_(1.0001)

WARMUP = 6  # RAdam's first 5 steps are momentum only (rho_t <= 5): time the rectified steps that dominate training

def _sync(device): return torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

def time_cases(makers, shapes, device, steps, repeats, warmup=WARMUP):
    "Per repeat, the milliseconds per step of every case, in a rotating order; the case 'copy' streams the parameters' size once"
    sync, opts = _sync(device), {'copy': Copy(sum(math.prod(s) for s in shapes), device)}
    for label, make in makers.items():
        opts[label] = make(make_params(shapes, device))
        for _ in range(warmup): opts[label].step()  # state allocated, caches warm, RAdam past its momentum-only steps
    runs, labels = {k: [] for k in opts}, list(opts)
    for r in range(repeats):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            opt = opts[label]
            sync(); t0 = time.perf_counter()
            for _ in range(steps): opt.step()
            sync(); runs[label].append((time.perf_counter() - t0) / steps * 1e3)
    return runs

def reference(runs):
    "torch's fused kernel where there is one, else the fastest (by median) of the implementations outside optbook (torch's, timm's, schedulefree's)"
    if 'torch fused' in runs: return 'torch fused'
    theirs = [k for k in runs if not k.startswith('optbook') and k != 'copy']
    return min(theirs, key=lambda k: statistics.median(runs[k]))

def summarize(runs, words, numel):
    "Median ms, ratio to the reference (median of per-repeat ratios) and its spread, and optbook's best over the bandwidth bound"
    ref, copy_ms = reference(runs), runs.pop('copy')
    bandwidth = Copy.words * 4 * numel / (min(copy_ms) * 1e-3)  # the best streaming rate seen in this interleaved run
    rows = {}
    for k, ms in runs.items():
        ratios = [a / b for a, b in zip(ms, runs[ref])]
        rows[k] = (statistics.median(ms), statistics.median(ratios), max(ratios) - min(ratios))
    best = min((k for k in runs if k.startswith('optbook')), key=lambda k: rows[k][0])
    bound_ms = words * 4 * numel / bandwidth * 1e3
    return ref, rows, best, rows[best][0] / bound_ms, bandwidth

COLUMNS = ['optbook per-tensor', 'optbook foreach', 'optbook fused', 'torch for-loop', 'torch foreach', 'torch fused', 'timm', 'schedulefree']

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='seconds: the tiny and ResNet-18 sets, 3 repeats of 1 step, a few optimizers')
    ap.add_argument('--sets', default='resnet18,transformer,tiny')
    ap.add_argument('--only', default='', help="comma-separated optimizer names, or 'after-adam' for chapter 13's five (default: those of chapters 02-10)")
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--repeats', type=int, default=7)
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--threads', type=int, default=1, help='torch.set_num_threads (default 1: a shared machine measures best alone)')
    ap.add_argument('--markdown', action='store_true')
    args = ap.parse_args()
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sets, opts = args.sets.split(','), optimizers()
    every = opts | after_adam()  # chapter 13's five only when named: Muon's bfloat16 products take seconds a step on a CPU
    if args.quick: sets, args.steps, args.repeats, opts = ['tiny', 'resnet18'], 1, 3, {k: opts[k] for k in ('SGD momentum', 'Adam', 'RMSprop', 'RAdam')}
    if args.only: opts = {k: every[k] for k in (AFTER_ADAM if args.only == 'after-adam' else args.only.split(','))}
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s), {args.repeats} repeats of {args.steps} steps, float32")
    for set_name in sets:
        shapes = SETS[set_name]()
        numel = sum(math.prod(s) for s in shapes)
        print(f"\n## {set_name}: {len(shapes)} tensors, {numel / 1e6:.2f}M numbers")
        head = ['optimizer', 'reference', 'ref ms'] + COLUMNS + ['best / bound', 'GB/s', 'noise']
        print('| ' + ' | '.join(head) + ' |' if args.markdown else '  '.join(f"{h:>14s}" for h in head))
        if args.markdown: print('|' + '---|' * len(head))
        for name, spec in opts.items():
            taken = spec[5](shapes) if len(spec) > 5 else shapes
            if not taken: continue  # Muon on the tiny set: no matrices
            runs = time_cases(cases(name, spec), taken, device, args.steps, args.repeats, warmup=1 if name == 'Muon' else WARMUP)  # Muon: one step allocates its state
            ref, rows, best, over_bound, bw = summarize(runs, spec[3], sum(math.prod(s) for s in taken))
            if taken is not shapes: name = f"{name} ({len(taken)} matrices, {sum(math.prod(s) for s in taken) / 1e6:.2f}M)"
            cells = [name, ref, f"{rows[ref][0]:.2f}"] + [f"{rows[c][1]:.2f}x" if c in rows else '-' for c in COLUMNS]
            noise = max(rows[k][2] for k in rows)
            cells += [f"{over_bound:.2f}x ({best.split()[1]})", f"{bw / 1e9:.1f}", f"±{noise / 2:.2f}"]
            print('| ' + ' | '.join(cells) + ' |' if args.markdown else '  '.join(f"{c:>14s}" for c in cells), flush=True)

if __name__ == '__main__': main()
