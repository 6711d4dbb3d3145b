"""optbook.Muon under FSDP2 (`fully_shard`: every weight a row-sharded DTensor) in 2 processes with gloo on the CPU, against
one process on the whole batch. Newton-Schulz needs the whole matrix: `orthogonalize` gathers each sharded momentum,
orthogonalizes it on every process and keeps the process's rows. Run as in tests/test_distributed.py: this file, as a
script, is the worker (`python tests/test_muon_distributed.py RANK PORT OUT`); the workers are killed after TIMEOUT seconds."""
import os, socket, subprocess, sys, time
from datetime import timedelta
from pathlib import Path
import pytest, torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
import optbook

ROOT = Path(__file__).resolve().parents[1]
WORLD, BS, STEPS, TIMEOUT = 2, 16, 6, 300
KW = dict(lr=0.02, weight_decay=0.1, momentum=0.9)

def make_model(seed=0):
    "Three matrices, no bias: 7 rows shard unevenly (4 + 3), 16 and 10 evenly; float64, so that the reduce-scatter's last bits stay below bfloat16's rounding"
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 16, bias=False), nn.ReLU(), nn.Linear(16, 7, bias=False), nn.ReLU(), nn.Linear(7, 10, bias=False)).double()

def batches(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BS, 40, generator=g, dtype=torch.float64), torch.randint(0, 10, (BS,), generator=g)) for _ in range(STEPS)]

def train(model, opt, part=lambda t: t):
    for x, y in batches():
        opt.zero_grad(); F.cross_entropy(model(part(x)), part(y)).backward(); opt.step()

def reference():
    model = make_model(); train(model, optbook.Muon(model.parameters(), **KW))
    return torch.cat([p.detach().flatten() for p in model.parameters()])

def _part(t, rank): return t.chunk(WORLD)[rank]

def fsdp_scenario(rank):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    model = fully_shard(make_model(), mesh=init_device_mesh('cpu', (WORLD,)))
    assert all(isinstance(p, DTensor) for p in model.parameters())
    opt = optbook.Muon(model.parameters(), **KW)
    train(model, opt, lambda t: _part(t, rank))
    assert all(isinstance(s['momentum_buffer'], DTensor) for s in opt.state.values())
    local_rows = [p.to_local().shape[0] for p in model.parameters()]
    return torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()]), local_rows

def naive_shards():
    "What stepping each process's rows alone would give (Newton-Schulz on a block of rows): the check can fail"
    model = make_model()
    shards = [[nn.Parameter(s.clone()) for s in p.detach().chunk(WORLD)] for p in model.parameters()]
    opts = [optbook.Muon([sh[r] for sh in shards], **KW) for r in range(WORLD)]
    names = [n for n, _ in model.named_parameters()]
    for x, y in batches():
        for o in opts: o.zero_grad()
        F.cross_entropy(torch.func.functional_call(model, dict(zip(names, (torch.cat(sh) for sh in shards))), (x,)), y).backward()
        for o in opts: o.step()
    return torch.cat([torch.cat(sh).detach().flatten() for sh in shards])

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def results(tmp_path_factory):
    out, port = tmp_path_factory.mktemp('muon_dist'), str(_free_port())
    env = os.environ | {'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    logs = [out/f'rank{r}.log' for r in range(WORLD)]
    procs = [subprocess.Popen([sys.executable, __file__, str(r), port, str(out)], stdout=open(l, 'w'), stderr=subprocess.STDOUT, env=env) for r, l in enumerate(logs)]
    deadline = time.monotonic() + TIMEOUT
    try:
        for p in procs: p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers did not finish in {TIMEOUT}s; killed. Logs:\n" + '\n'.join(l.read_text()[-2000:] for l in logs))
    finally:
        for p in procs:
            if p.poll() is None: p.kill(); p.wait()
    for p, l in zip(procs, logs): assert p.returncode == 0, f"worker failed:\n{l.read_text()[-4000:]}"
    return torch.load(out/'result.pt')

def test_fsdp2_muon_equals_one_process(results):
    flat, local_rows = results
    assert local_rows == [8, 4, 5]  # rank 0's rows of the 16-, 7- and 10-row matrices: the matrices really were split
    torch.testing.assert_close(flat, reference(), rtol=0, atol=1e-12)

def test_orthogonalizing_each_block_of_rows_alone_is_another_optimizer(results):
    assert (naive_shards() - reference()).abs().max() > 1e-4

def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=port)
    dist.init_process_group('gloo', rank=rank, world_size=WORLD, timeout=timedelta(seconds=TIMEOUT))
    try:
        res = fsdp_scenario(rank)
        if rank == 0: torch.save(res, Path(out)/'result.pt')
    finally:
        dist.destroy_process_group()

if __name__ == '__main__':
    import traceback
    rank, port, out = sys.argv[1:]
    try: _worker(int(rank), port, out); code = 0
    except BaseException: traceback.print_exc(); code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)  # skip finalization: see tests/test_distributed.py's _exit_without_finalizing (gloo's thread at exit)
