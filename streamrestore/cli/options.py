"""argparse value checkers that give one-line messages naming the option."""
from __future__ import annotations

import argparse
import math


def positive_int(option: str, minimum: int = 1, multiple: int = 1, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: give a whole number") from None
        if value < minimum or value % multiple or (maximum is not None and value > maximum):
            extra = f" and a multiple of {multiple}" if multiple > 1 else ""
            extra += f" and at most {maximum}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"{option} {value}: must be at least {minimum}{extra}")
        return value

    return parse


def choice(option: str, allowed: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: unknown; use one of {', '.join(allowed)}")
        return text

    return parse


def fraction(option: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: give a number between 0 and 1") from None
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f"{option} {value}: must be between 0 and 1")
        return value

    return parse


def positive_float(option: str, zero_ok: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: give a {'non-negative' if zero_ok else 'positive'} number") from None
        if not math.isfinite(value) or not (value >= 0 if zero_ok else value > 0):
            raise argparse.ArgumentTypeError(f"{option} {value}: must be finite and {'0 or more' if zero_ok else 'greater than 0'}")
        return value

    return parse


def attempts_or_forever(option: str):
    """A number of attempts (0 or more) or `forever`; returns the text as given (ReconnectPolicy.parse reads it)."""
    def parse(text: str) -> str:
        if text.strip().lower() == "forever":
            return "forever"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: give a number of attempts (0 or more) or 'forever'") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{option} {value}: the number of attempts must be 0 or more")
        return str(value)

    return parse


def sampling_steps(option: str):
    """Sampling steps: 1 up to the number of distinct times Algorithm 3 visits with the schedule every
    streamrestore checkpoint is trained with (T = 100: 7); further steps only repeat t = 1."""
    whole = positive_int(option)

    def parse(text: str) -> int:
        value = whole(text)
        from streamrestore.model.sampler import sampling_times, useful_steps
        from streamrestore.model.sde import MeanRevertingSchedule

        T = MeanRevertingSchedule.create().T
        limit = useful_steps(T)
        if value > limit:
            times = ", ".join(map(str, sampling_times(T, limit)))
            raise argparse.ArgumentTypeError(f"{option} {value}: at most {limit} steps are useful (t halves from "
                                             f"T={T}: {times}; more steps repeat t=1)")
        return value

    return parse


def add_second_time(parser: argparse.ArgumentParser) -> None:
    """`--second-time`, shared by `run` and `eval`: where Algorithm 3's steps after the first re-noise to
    (streamrestore.model.sampler.sampling_times); its range is checked where the weights load
    (streamrestore.model.checkpoint.load_for_sampling)."""
    parser.add_argument("--second-time", type=positive_int("--second-time"),
                        help="where steps after the first re-noise to, 1..99 (default: the model card's "
                             "`sampling.second_time`, else 50)")


def add_self_ensemble(parser: argparse.ArgumentParser) -> None:
    """`--self-ensemble`, shared by `run` and `eval` (streamrestore.backends.self_ensemble)."""
    parser.add_argument("--self-ensemble", action="store_true",
                        help="restore each frame in its 8 flips and 90-degree rotations (derain: 4, kept upright) "
                             "and average the results: a better picture (+0.4-0.6 dB on the held-out photographs for "
                             "denoise and derain) for 8x (4x) the time")
