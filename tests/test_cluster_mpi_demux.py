"""mpirun --tag-output's pieces turned back into each rank's lines (no MPI needed). The format is
what OpenMPI 4.1 printed here for ranks writing 300 KB lines at once: every piece starts with
``[job,rank]<stdout>:``, a piece that stops mid-line is not ended, and the next piece (of any
rank) follows on the same physical line."""

import json

from asprof.cluster.mpi import TaggedOutput

TAG = "@@asprof "


def _msg(rank, pad):
    return TAG + json.dumps({"type": "result", "rank": rank, "result": {"pad": str(rank) * pad}})


def test_interleaved_pieces_give_each_rank_its_whole_lines():
    a, b = _msg(0, 5000), _msg(1, 5000)
    stream = (f"[1,0]<stdout>:{a[:3000]}[1,1]<stdout>:{b[:1234]}[1,0]<stdout>:{a[3000:4000]}"
              f"[1,1]<stdout>:{b[1234:]}\n[1,1]<stdout>:plain text of rank 1\n[1,0]<stdout>:{a[4000:]}\n"
              "mpirun: a line of its own\n").encode()
    d = TaggedOutput()
    out = []
    for i in range(0, len(stream), 777):  # reads cut pieces, tags and lines anywhere
        out += d.feed(stream[i:i + 777])
    out += d.feed(b"", final=True)
    assert out == [(1, b), (1, "plain text of rank 1"), (0, a), (None, "mpirun: a line of its own")]


def test_an_unfinished_line_is_given_at_the_end():
    d = TaggedOutput()
    assert d.feed(b"[1,2]<stderr>:warning: some") == []
    assert d.feed(b"thing\n[1,3]<stderr>:Traceback (most rec") == [(2, "warning: something")]
    assert d.feed(b"", final=True) == [(3, "Traceback (most rec")]
