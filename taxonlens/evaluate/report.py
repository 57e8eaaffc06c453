"""Self-contained HTML reports: tables, per-rank accuracy plots and sample photos
with their predicted paths, all inlined (one file to open or send)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.samples{display:flex;flex-wrap:wrap;gap:12px}.sample{width:220px;font-size:12px}
.sample img{width:128px;height:128px;image-rendering:pixelated;display:block}
.ok{color:#1a7f37}.bad{color:#c62828}.muted{color:#777}
"""


@dataclass
class Sample:
    """One photo shown in a report, with its truth and answer."""

    image: Image.Image
    truth: Sequence[str]
    predicted: Sequence[str]
    caption: str = ""


@dataclass
class Report:
    """An HTML report assembled section by section."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> None:
        """A table; floats are shown with one decimal."""
        def cell(v: object) -> str:
            return f"{v:.1f}" if isinstance(v, float) else html.escape(str(v))

        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")

    def rank_plot(self, series: Mapping[str, Mapping[str, float]], title: str) -> None:
        """Accuracy per rank (x) for each named series (one line each), as an inline PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.6))
        for name, per_rank in series.items():
            ax.plot(list(per_rank), list(per_rank.values()), marker="o", label=name)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        self.parts.append(f'<img alt="{html.escape(title)}" src="data:image/png;base64,'
                          f'{base64.b64encode(buf.getvalue()).decode()}">')

    def samples(self, items: Sequence[Sample]) -> None:
        """Photos with the true and predicted paths; wrong names are marked."""
        cards = []
        for s in items:
            buf = io.BytesIO()
            s.image.save(buf, format="PNG")
            lines = []
            for k, name in enumerate(s.predicted):
                right = k < len(s.truth) and name.lower() == s.truth[k].lower()
                lines.append(f'<span class="{"ok" if right else "bad"}">{html.escape(name)}</span>')
            cards.append(
                f'<div class="sample"><img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
                f'<div>{" &gt; ".join(lines) or "<i>no rank trusted</i>"}</div>'
                f'<div class="muted">truth: {html.escape(" > ".join(s.truth))}</div>'
                f'<div class="muted">{html.escape(s.caption)}</div></div>'
            )
        self.parts.append(f'<div class="samples">{"".join(cards)}</div>')

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                        f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
                        + "\n".join(self.parts) + "</body></html>\n", encoding="utf-8")
        return path
