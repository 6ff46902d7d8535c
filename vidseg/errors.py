"""One base class for every expected vidseg failure, and the documented exit codes.

An expected error (bad config, data, checkpoint, device, source, sink, argument) derives from
`VidsegError`. `vidseg.cli.main` prints it as one line, ``vidseg COMMAND: error: MESSAGE``,
and exits with its `code`; anything else is a genuine bug and keeps its traceback. `--debug`
shows the traceback for expected errors too.

Exit codes (docs/RELIABILITY.md):
    0  success
    1  a bug (unexpected exception, traceback printed)
    2  bad input: nothing was done (config, argument, data, checkpoint, device, output path)
    3  stopped early: part of the work is done and kept (interrupt, lost source, full disk)
    130 interrupted before any work was kept
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130


class VidsegError(Exception):
    """An expected failure; the message is one line naming the file or value and the problem.

    `code` is the process exit status `vidseg` uses for it (EXIT_BAD_INPUT unless given).
    """

    code: int = EXIT_BAD_INPUT

    def __init__(self, *args, code: int | None = None):
        super().__init__(*args)
        if code is not None:
            self.code = code

    def one_line(self) -> str:
        """The message as one line (first line of a multi-line message, else the type name).

        An error raised in a DataLoader worker reaches the main process re-created by torch
        with "Caught X in DataLoader worker ... Original Traceback ..." as its text; the
        original message is the traceback's last line, `module.X: message`.
        """
        text = str(self).strip()
        if text.startswith("Caught ") and "\nOriginal Traceback" in text:
            head, sep, message = text.splitlines()[-1].partition(": ")
            if sep and head.endswith(type(self).__name__) and message.strip():
                return message.strip()
        return text.splitlines()[0] if text else type(self).__name__


class DeviceError(VidsegError):
    """A device that is not a torch device name or is not available here (`--device cuda` on a
    machine without a usable GPU); raised before any model is built."""
