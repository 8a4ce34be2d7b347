"""The start of a sandbox (recorder/sandbox/launch.py): what nixrec makes of the lines
the helper and the builder write to it, in whatever order they come."""

import pytest

from nixrec.recorder.sandbox.launch import SetupError, started


def reader(*lines):
    it = iter(lines)
    return lambda: next(it, b"")


@pytest.mark.parametrize("lines", [(b"B42\n", b"R\n"), (b"R\n", b"B42\n")])
def test_the_builder_may_say_it_is_ready_before_the_helper_names_it(lines):
    # The second order is a loaded machine: the helper, just back from its
    # fork, is not scheduled before the builder has set up the whole sandbox.
    assert started(reader(*lines)) == 42


@pytest.mark.parametrize("lines,message", [
    ((b"B42\n", b"Emount: Permission denied\n"), "setting up the sandbox: mount: Permission denied"),
    ((b"Emount: Permission denied\n", b"B42\n"), "setting up the sandbox: mount: Permission denied"),
    ((), "starting the builder: the sandbox helper exited early"),
    ((b"B42\n",), "setting up the sandbox: the sandbox helper exited early"),
    ((b"R\n",), "starting the builder: the sandbox helper exited early"),
    ((b"B42\n", b"B43\n"), "setting up the sandbox: the sandbox helper exited early"),
])
def test_a_setup_error_names_its_step(lines, message):
    with pytest.raises(SetupError) as e:
        started(reader(*lines))
    assert str(e.value) == message
