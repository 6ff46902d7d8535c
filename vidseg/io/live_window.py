"""The desktop live view: an OpenCV window with the overlay, the legend and FPS in its title."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence

import cv2
import numpy as np

from vidseg.io.palette import overlay
from vidseg.io.selftest import QT_QUIET, live_window
from vidseg.io.sink_base import draw_legend

log = logging.getLogger(__name__)


class LiveWindow:
    """A desktop window (cv2.imshow) with the overlay and the class legend; the title shows FPS.

    q, Esc or closing the window asks the run to stop (`show` returns False). The window is
    used only when `selftest.live_window()` passes: an OpenCV build with a GUI, a display, and
    a test window that opened in a child process (OpenCV's Qt backend aborts the whole process
    on an unreachable display). Otherwise `enabled` is False, `reason` says why (logged once as
    a warning) and `show` does nothing.

    Args:
        title: window name; the FPS is appended to the title bar.
        alpha: weight of the class colours.
        class_names: legend name of each train id.
        legend: draw the legend of visible classes.
    """

    stop_reason = "stopped from the live window (q, Esc or window closed)"

    def __init__(
        self,
        title: str = "vidseg",
        alpha: float = 0.5,
        class_names: Sequence[str] | None = None,
        legend: bool = True,
    ):
        self.title, self.alpha, self.class_names, self.legend = title, alpha, class_names, legend
        decision = live_window()
        self.enabled = decision.choice == "available"
        self.reason = decision.reason
        self._opened = False
        self._mapped = False  # seen visible once: only then does "not visible" mean closed
        self._title_at = 0.0
        if not self.enabled:
            log.warning("live window disabled: %s", decision.reason)
        else:
            # opencv-python's Qt looks for fonts in a folder its wheel does not ship and warns
            # about it several times per window; the window needs no fonts of its own.
            os.environ.setdefault("QT_LOGGING_RULES", QT_QUIET)

    def show(self, rgb: np.ndarray, labels: np.ndarray, fps: float) -> bool:
        """Show one result; False when the user pressed q / Esc or closed the window.

        Args:
            rgb: uint8 ``(H, W, 3)``.
            labels: uint8 ``(H, W)`` train ids (255 = ignore, left unblended).
            fps: shown in the title bar.
        """
        if not self.enabled:
            return True
        img = overlay(rgb, labels, self.alpha)
        if self.legend:
            draw_legend(img, labels, self.class_names)
        try:
            if not self._opened:
                cv2.namedWindow(
                    self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL
                )
            cv2.imshow(self.title, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            now = time.monotonic()
            if now - self._title_at >= 0.5:  # a number that changes every frame is unreadable
                cv2.setWindowTitle(self.title, f"{self.title} - {fps:.1f} FPS")
                self._title_at = now
            key = cv2.waitKey(1) & 0xFF
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error as exc:
            if self._opened:  # the user closed the window: OpenCV no longer knows the name
                return False
            self.enabled = False
            log.warning("live window disabled: %s", str(exc).strip().splitlines()[-1])
            return True
        self._opened = True
        # A loaded X server may map the window a few frames late; not yet visible is not closed.
        closed = self._mapped and not visible
        self._mapped = self._mapped or visible
        return not closed and key not in (ord("q"), ord("Q"), 27)

    def close(self) -> None:
        if self._opened:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)  # let the GUI event loop actually take the window down
            self._opened = self._mapped = False
        self.enabled = False
