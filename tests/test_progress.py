"""The driver's rendering of rank 0's progress events: a bar on a terminal, throttled lines otherwise."""

from __future__ import annotations

import io

from medmplm.train.progress import ProgressPrinter


def step(number: int, total: int = 100) -> dict:
    return {
        "kind": "step",
        "step": number,
        "total_steps": total,
        "epoch": number // 10,
        "loss": 2.5,
        "lr": 5e-4,
        "samples_per_s": 120.0,
        "steps_per_s": 4.0,
    }


def validation(epoch: int) -> dict:
    return {
        "kind": "validation",
        "epoch": epoch,
        "step": epoch * 10,
        "metric": "val_loss",
        "value": 1.25,
        "examples": 71,
        "best": 1.25,
        "best_epoch": epoch,
    }


def test_without_a_terminal_step_lines_are_throttled_and_validations_always_print():
    stream = io.StringIO()
    printer = ProgressPrinter("pretrain", bar=False, interval_s=3600.0, stream=stream)
    printer.handle({"kind": "start", "step": 0, "total_steps": 100})
    for number in range(5, 101, 5):
        printer.handle(step(number))
        if number % 10 == 0:
            printer.handle(validation(number // 10))
    printer.close()
    lines = stream.getvalue().splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    # The first interval's line and the last step's line; the hour-long interval hides the rest.
    assert step_lines == [
        "step 5/100 epoch 0 loss 2.5000 lr 5.00e-04 120 samples/s ETA 0m24s",
        "step 100/100 epoch 10 loss 2.5000 lr 5.00e-04 120 samples/s ETA 0m00s",
    ]
    assert sum(line.startswith("epoch ") for line in lines) == 10
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()


def test_on_a_terminal_one_bar_shows_steps_loss_and_rate():
    stream = io.StringIO()
    printer = ProgressPrinter("readmission", bar=True, stream=stream)
    printer.handle({"kind": "start", "step": 40, "total_steps": 100})
    printer.handle(step(60))
    printer.handle(validation(6))
    printer.close()
    text = stream.getvalue()
    assert "resuming at step 40 of 100" in text
    assert "readmission" in text and "60/100" in text and "loss 2.5000" in text and "120 samples/s" in text
    assert "epoch 6 (step 60): val_loss 1.2500 on 71 examples" in text
