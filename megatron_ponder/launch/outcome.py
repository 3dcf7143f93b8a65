"""What one attempt of a batch job amounts to, from the launcher's exit status, the ranks'
recorded exit codes and whether the batch script was asked to stop (SIGUSR1)."""

from __future__ import annotations

from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT, EXIT_DONE, EXIT_REQUEUE

COMPLETED = "completed"
REQUEUE = "requeue"
BAD_INPUT = "bad-input"
FAILED = "failed"


def decide(launcher_rc: int, codes: dict[int, int], stop_requested: bool,
           terminated_before_save: bool = False) -> str:
    """codes: rank -> exit code, for the ranks that recorded one. The launcher's own code
    counts where it is one of the trainer's (2, 3): torchrun turns those into 1, a plain
    process (the sweep tool) passes them through.

    - completed: the launcher succeeded (every rank exited 0).
    - bad-input: a rank refused its recipe, data or checkpoint; running again cannot help.
    - requeue: a rank stopped after a (collective, hence complete) checkpoint, or the script
      was asked to stop, and no rank crashed or finished. A rank without a code was ended by
      the stop (for example signalled before its handlers existed): it had nothing unsaved
      beyond the newest complete checkpoint, which the next attempt resumes.
      `terminated_before_save` (Slurm's SIGTERM ended the attempt, and no checkpoint was
      completed during it) counts as such a stop: a rank that died of it without a code (exit
      143: signalled in the interpreter's own start, before its handlers, README "exit
      codes") had trained nothing, so the attempt lost nothing and running again is safe.
    - failed: anything else (a crash, a kill, a rank that finished while another did not).
    """
    if launcher_rc == EXIT_DONE:
        return COMPLETED
    values = set(codes.values())
    if EXIT_BAD_INPUT in values or launcher_rc == EXIT_BAD_INPUT:
        return BAD_INPUT
    if launcher_rc == EXIT_REQUEUE:  # a launcher that passes the trainer's code through
        values.add(EXIT_REQUEUE)
    if values <= {EXIT_REQUEUE} and (EXIT_REQUEUE in values or stop_requested
                                     or terminated_before_save):
        return REQUEUE
    return FAILED

