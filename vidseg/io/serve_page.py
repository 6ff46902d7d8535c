"""The HTML page of the browser live view, and the class legend it and `/status` share.

One self-contained page (no external scripts, styles or fonts, so it works offline and on a
machine with no internet): the MJPEG overlay in an ``<img>``, the FPS, the classes in view with
their overlay colours, and a Stop button. The legend is rendered server-side into the first HTML
(visible before any script runs) and refreshed from `/status` twice a second.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from vidseg.io.palette import NUM_COLORS, PALETTE, label_counts


def class_name(class_id: int, class_names: Sequence[str] | None) -> str:
    """Name of a train id; ``class <id>`` when the names are unknown or too short."""
    if class_names is not None and class_id < len(class_names):
        return str(class_names[class_id])
    return f"class {class_id}"


def legend_rows(
    labels: np.ndarray, class_names: Sequence[str] | None, max_items: int = 12
) -> list[dict]:
    """The classes visible in a label map, largest area first.

    Args:
        labels: uint8 ``(H, W)`` train ids (255 = ignore, not listed).
        class_names: name of each train id, or None.
        max_items: at most this many rows.

    Returns:
        ``[{"id": int, "name": str, "color": "#rrggbb", "share": float in (0, 1]}, ...]``,
        ``share`` being the fraction of the frame's pixels; the colour is the overlay's.
    """
    counts = label_counts(labels)[:NUM_COLORS]
    ids = np.nonzero(counts)[0]
    order = ids[np.argsort(-counts[ids], kind="stable")][:max_items]
    total = max(int(labels.size), 1)
    return [
        {
            "id": int(k),
            "name": class_name(int(k), class_names),
            "color": "#{:02x}{:02x}{:02x}".format(*(int(c) for c in PALETTE[k])),
            "share": round(float(counts[k]) / total, 4),
        }
        for k in order
    ]


def _legend_html(rows: list[dict]) -> str:
    # Same markup as rows() in the page's script, so the first render and the updates agree.
    return "".join(
        f'<li><span class="sw" style="background:{r["color"]}"></span>'
        f"<span>{html.escape(r['name'])}</span>"
        f'<span class="share">{100 * r["share"]:.1f}%</span></li>'
        for r in rows
    )


_STYLE = """
body{margin:0;padding:16px;display:flex;flex-wrap:wrap;gap:16px;background:#15171a;color:#e8e8e8;
  font:15px system-ui,-apple-system,"Segoe UI",sans-serif}
main{flex:1 1 560px;min-width:0}
header{display:flex;align-items:baseline;justify-content:space-between;gap:12px;margin-bottom:8px}
h1{font-size:18px;margin:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
h2{font-size:15px;margin:18px 0 6px}
#fps{font-variant-numeric:tabular-nums;color:#9fd3a0;white-space:nowrap}
#view{display:block;width:100%;min-height:200px;background:#000;image-rendering:auto}
aside{flex:0 0 250px}
ul{list-style:none;margin:0;padding:0}
li{display:flex;align-items:center;gap:8px;padding:3px 0}
.sw{flex:none;width:14px;height:14px;border-radius:3px;border:1px solid #0006}
.share{margin-left:auto;color:#9a9a9a;font-variant-numeric:tabular-nums}
button{font:inherit;padding:7px 22px;border:0;border-radius:4px;background:#c62828;color:#fff;
  cursor:pointer}
button:disabled{background:#555;cursor:default}
#state{color:#9a9a9a;min-height:1.2em;margin:8px 0 0}
"""

# Polls /status; when it stops answering, the run has ended.
_SCRIPT = """
const fps = document.getElementById('fps'), legend = document.getElementById('legend');
const state = document.getElementById('state'), stop = document.getElementById('stop');
const esc = s => s.replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;',
                                              '"': '&quot;'}[c]));
const rows = items => items.map(r => '<li><span class="sw" style="background:' + r.color +
  '"></span><span>' + esc(r.name) + '</span><span class="share">' +
  (100 * r.share).toFixed(1) + '%</span></li>').join('');
async function poll() {
  try {
    const s = await (await fetch('/status', {cache: 'no-store'})).json();
    fps.textContent = s.fps.toFixed(1) + ' FPS \\u00b7 frame ' + s.frames;
    legend.innerHTML = rows(s.legend);
    if (s.stopping) { stop.disabled = true; state.textContent = 'stopping\\u2026'; }
  } catch (e) {
    stop.disabled = true; state.textContent = 'the run has ended';
    return;
  }
  setTimeout(poll, 500);
}
stop.onclick = async () => {
  stop.disabled = true; state.textContent = 'stopping\\u2026';
  try { await fetch('/stop', {method: 'POST'}); } catch (e) { /* the run ended meanwhile */ }
};
poll();
"""


def render_page(title: str, status: dict) -> bytes:
    """The live-view page as UTF-8 HTML.

    Args:
        title: shown as the heading and the tab title (e.g. the source name).
        status: the current `/status` dict (``fps``, ``frames``, ``legend``), for the first render.
    """
    name = html.escape(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} - vidseg live view</title><style>{_STYLE}</style></head>
<body><main>
<header><h1>{name}</h1><span id="fps">{status["fps"]:.1f} FPS &middot; frame {status["frames"]}</span>
</header>
<img id="view" src="/stream.mjpg" alt="live segmentation overlay">
</main><aside>
<button id="stop" type="button">Stop</button><p id="state"></p>
<h2>Classes in view</h2><ul id="legend">{_legend_html(status["legend"])}</ul>
</aside><script>{_SCRIPT}</script></body></html>
""".encode()
