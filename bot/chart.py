"""The burndown chart of a sprint as a PNG (Pillow): remaining work per day against the ideal line."""
from __future__ import annotations

import io
from datetime import date

from PIL import Image, ImageDraw, ImageFont

from orchestration.results import SprintView

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 24, 40, 48
BACKGROUND, AXIS, GRID, IDEAL, ACTUAL, TEXT = "#2b2d31", "#b5bac1", "#3f4147", "#949ba4", "#5865f2", "#f2f3f5"


def remaining_per_day(view: SprintView) -> tuple[list[date], list[int], str]:
    """(the sprint's days, remaining per elapsed day, unit). Points when the sprint has points, else stories.
    A day with no recorded point carries the previous value forward; days still to come have no value."""
    by_points = view.total_points > 0
    unit = "points" if by_points else "stories"
    total = view.total_points if by_points else view.total_stories
    recorded = {p.day: (p.remaining_points if by_points else p.remaining_stories) for p in view.burndown}
    days = list(view.days) or sorted(recorded) or [date.today()]
    elapsed = days[: view.elapsed_days] if view.days else days
    values, last = [], total
    for day in elapsed:
        last = recorded.get(day, last)
        values.append(last)
    return days, values, unit


def burndown_png(view: SprintView) -> bytes:
    days, values, unit = remaining_per_day(view)
    total = max([view.total_points if unit == "points" else view.total_stories, *values, 1])
    img = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(i: int, value: float) -> tuple[float, float]:
        x = LEFT + (plot_w * i / (len(days) - 1) if len(days) > 1 else plot_w / 2)
        return x, TOP + plot_h * (1 - value / total)

    for k in range(5):  # horizontal grid with value labels
        value = total * k / 4
        _, y = xy(0, value)
        draw.line([(LEFT, y), (WIDTH - RIGHT, y)], fill=GRID)
        draw.text((8, y - 6), f"{value:g}", fill=AXIS, font=font)
    draw.line([(LEFT, TOP), (LEFT, TOP + plot_h), (WIDTH - RIGHT, TOP + plot_h)], fill=AXIS, width=2)
    step = max(1, len(days) // 8)
    for i in range(0, len(days), step):
        x, _ = xy(i, 0)
        draw.text((x - 14, TOP + plot_h + 8), days[i].strftime("%m-%d"), fill=AXIS, font=font)

    if len(days) > 1:  # the ideal line reaches zero on the sprint's planned last day
        draw.line([xy(0, total), xy(len(days) - 1, 0)], fill=IDEAL, width=1)
    if len(values) > 1:
        draw.line([xy(i, v) for i, v in enumerate(values)], fill=ACTUAL, width=3)
    for i, v in enumerate(values):
        x, y = xy(i, v)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=ACTUAL)

    end = view.sprint.planned_end
    title = f"{view.sprint.id} burndown · {values[-1]} of {total} {unit} remaining" + (
        f" · ends {end:%m-%d}" if end else "")
    draw.text((LEFT, 12), title, fill=TEXT, font=font)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()
