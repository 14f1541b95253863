"""Reports made after the fact from a session file and its runner journal.

- `closedloop.reports.summary`: what a run did, in a few lines (``closedloop run``'s summary);
- `closedloop.reports.loop_report`: how well the loop controlled its units
  (`loop_report`), with its numbers in `closedloop.reports.loop_numbers` and its text and
  figure in `closedloop.reports.loop_view`.
"""
