"""The fleet table: a thousand rows that redraw in milliseconds.

Textual's DataTable forgets every rendered row whenever any cell changes, so
with a thousand hosts and hundreds of changes a second each frame re-rendered
every visible row. This table keeps each rendered row keyed by what it shows
(its values, the column widths, cursor and stripe, the theme): a frame renders
only the rows whose content changed, and lines come straight from that cache
(Textual's line API). Columns only grow, so rows never need re-measuring.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

CACHE_ROWS = 4000
GAP = 2


@dataclass(frozen=True)
class TableRow:
    key: str
    #: What the row shows, one string per column, then anything else its look depends on:
    #: equal values mean an equal rendering.
    values: tuple[str, ...]
    #: A Rich style per column ("" for none).
    styles: tuple[str, ...]

    def cells(self, columns: int) -> list[Text]:
        return [Text(v, style=s) for v, s in zip(self.values[:columns], self.styles, strict=False)]


class FleetTable(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"fleet-table--header", "fleet-table--cursor", "fleet-table--stripe"}
    DEFAULT_CSS = """
    FleetTable { height: 1fr; }
    FleetTable > .fleet-table--header { text-style: bold; background: $panel; }
    FleetTable > .fleet-table--cursor { background: $primary 60%; text-style: bold; }
    FleetTable:focus > .fleet-table--cursor { background: $primary; }
    FleetTable > .fleet-table--stripe { background: $surface; }
    """
    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    class RowSelected(Message):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    class HeaderSelected(Message):
        def __init__(self, column: str) -> None:
            super().__init__()
            self.column = column

    def __init__(self, columns: Sequence[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self.widths = [len(c) for c in self.columns]
        self.rows: list[TableRow] = []
        self.cursor = 0
        #: Until the operator moves the cursor, it stays on the first (worst) row; after
        #: that it follows the host it is on through re-sorting.
        self.follow = False
        self.header_note: dict[str, str] = {}
        self._shape: tuple[object, ...] = ()
        self._strips: OrderedDict[tuple[object, ...], Strip] = OrderedDict()

    # -- data in ---------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def row_keys(self) -> list[str]:
        return [r.key for r in self.rows]

    def cursor_key(self) -> str | None:
        return self.rows[self.cursor].key if self.rows else None

    def make_row(self, key: str, values: tuple[str, ...], styles: tuple[str, ...]) -> TableRow:
        """A row for `set_rows`; measured once, here, and rendered only when on screen.
        Widths only grow: a shrinking column would shift every row under the operator's eyes."""
        for i, value in enumerate(values[: len(self.columns)]):
            if (n := cell_len(value)) > self.widths[i]:
                self.widths[i] = n
        return TableRow(key, values, styles)

    def set_rows(self, rows: list[TableRow]) -> None:
        """Show these rows in this order; a cursor the operator placed stays on its host if
        it is still there."""
        keep = self.cursor_key() if self.follow else None
        before, shape = self.rows, (tuple(self.widths), self.cursor, len(self.rows))
        self.rows = rows
        if keep is not None:
            self.cursor = next((i for i, r in enumerate(rows) if r.key == keep), self.cursor)
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        size = Size(self._line_width(), len(rows) + 1)
        if size != self.virtual_size:  # a new size means a layout pass: only when it is new
            self.virtual_size = size
        if shape != (tuple(self.widths), self.cursor, len(rows)) or self._shape != shape:
            self._shape = (tuple(self.widths), self.cursor, len(rows))
            self.refresh()
            return
        # Same layout: repaint only the visible lines whose row changed.
        top = int(self.scroll_y)
        for line in range(1, self.size.height):
            i = top + line - 1
            if i < len(rows) and (i >= len(before) or before[i] is not rows[i]):
                self.refresh_line(top + line)  # virtual coordinates

    def _line_width(self) -> int:
        return sum(self.widths) + GAP * len(self.widths)

    # -- rendering -------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            what, strip = self._header()
        else:
            index = scroll_y + y - 1
            if index >= len(self.rows):
                return Strip.blank(width, self.rich_style)
            what, strip = self._row(index)
        # The visible part of a row, kept too: an unchanged line costs a dictionary lookup.
        key = (what, scroll_x, width)
        line = self._cached(key)
        if line is None:
            line = self._cached(key, strip.crop_extend(scroll_x, scroll_x + width, self.rich_style))
        assert line is not None
        return line

    def _cached(self, key: tuple[object, ...], build: Strip | None = None) -> Strip | None:
        if build is not None:
            self._strips[key] = build
            if len(self._strips) > CACHE_ROWS:
                self._strips.popitem(last=False)
            return build
        strip = self._strips.get(key)
        if strip is not None:
            self._strips.move_to_end(key)
        return strip

    def _header(self) -> tuple[tuple[object, ...], Strip]:
        key = ("header", tuple(self.widths), tuple(self.header_note.items()), self.app.theme)
        strip = self._cached(key)
        if strip is None:
            style = self.get_component_rich_style("fleet-table--header")
            cells = [Text(c.upper() + self.header_note.get(c, "")) for c in self.columns]
            strip = self._cached(key, self._render_cells(cells, style))
        assert strip is not None
        return key, strip

    def _row(self, index: int) -> tuple[tuple[object, ...], Strip]:
        row = self.rows[index]
        cursor = index == self.cursor
        focused = cursor and self.has_focus
        stripe = index % 2 == 1
        key = (row.values, tuple(self.widths), cursor, focused, stripe, self.app.theme)
        strip = self._cached(key)
        if strip is None:
            if cursor:
                style = self.get_component_rich_style("fleet-table--cursor")
            elif stripe:
                style = self.get_component_rich_style("fleet-table--stripe")
            else:
                style = self.rich_style
            strip = self._cached(
                key, self._render_cells(row.cells(len(self.columns)), style, cursor)
            )
        assert strip is not None
        return key, strip

    def _render_cells(self, cells: list[Text], base: Style, override: bool = False) -> Strip:
        line = Text(no_wrap=True, overflow="crop")
        for cell, width in zip(cells, self.widths, strict=False):
            text = cell.copy()
            text.truncate(width, pad=True)
            line.append_text(text)
            line.append(" " * GAP)
        segments = list(line.render(self.app.console))
        segments = [s for s in segments if s.text != "\n"]
        if override:
            # The cursor row reads in the cursor's colours, whatever each cell says.
            segments = list(Segment.apply_style(segments, post_style=base))
        else:
            segments = list(Segment.apply_style(segments, style=base))
        return Strip(segments).extend_cell_length(self._line_width(), base)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_resize(self) -> None:
        self.refresh()

    # -- moving ----------------------------------------------------------------

    def _visible_rows(self) -> int:
        return max(1, self.size.height - 1)

    def _show_cursor(self) -> None:
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + self._visible_rows():
            self.scroll_to(y=self.cursor - self._visible_rows() + 1, animate=False)
        self.refresh()

    def move_cursor(self, row: int) -> None:
        if not self.rows:
            return
        self.follow = True
        self.cursor = max(0, min(row, len(self.rows) - 1))
        self._show_cursor()

    def action_move(self, step: int) -> None:
        self.move_cursor(self.cursor + step)

    def action_page(self, step: int) -> None:
        self.move_cursor(self.cursor + step * self._visible_rows())

    def action_jump(self, where: int) -> None:
        self.move_cursor(where if where >= 0 else len(self.rows) - 1)

    def action_select(self) -> None:
        if (key := self.cursor_key()) is not None:
            self.post_message(self.RowSelected(key))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = event.x + int(self.scroll_x)
            edge = 0
            for column, width in zip(self.columns, self.widths, strict=True):
                edge += width + GAP
                if x < edge:
                    self.post_message(self.HeaderSelected(column))
                    return
            return
        index = int(self.scroll_y) + event.y - 1
        if 0 <= index < len(self.rows):
            if index == self.cursor and event.chain >= 2:
                self.action_select()
            self.move_cursor(index)
