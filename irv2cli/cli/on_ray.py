"""``--runner ray``: a run over inputs on a Ray cluster (see ``cluster``), streamed into a
results file or stdout as locally, or written by the cluster as a folder of shards."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import RunPlan


def launch_on_ray(plan: RunPlan) -> int:
    """Run ``plan`` on its Ray runner into its output (a file, a folder of shards, or
    stdout); return the exit status."""
    from ..results.shards import ShardFolder
    from .render import status_printer, stderr_console
    from .runs import EXIT_FAILED_INPUTS, EXIT_OK, execute, summarize
    from .signals import exit_status

    if not isinstance(plan.output, str):
        return execute(plan, plan.runner)
    console = stderr_console()
    notify = status_printer(console, plan.quiet)
    try:
        summary = plan.runner.write_shards(list(plan.inputs), ShardFolder(plan.output),
                                           plan.options, notify)
    except KeyboardInterrupt as interrupt:
        console.print(f"Interrupted: the shards already in {plan.output} are complete. Run "
                      "the same command with --resume to finish.", style="yellow")
        return exit_status(interrupt)
    summarize(console, plan, summary)
    return EXIT_FAILED_INPUTS if summary.any_failed else EXIT_OK
