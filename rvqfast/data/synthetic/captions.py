"""Captions: subjects, left/right mirroring of phrases and a small rule-based POS tagger
producing HumanML3D-style ``word/POS`` tokens."""
from __future__ import annotations

SUBJECTS = ["a person", "someone", "a man", "a woman", "the person", "a figure"]

_POS = {
    "a": "DET", "an": "DET", "the": "DET", "both": "DET", "all": "DET", "few": "ADJ",
    "person": "NOUN", "man": "NOUN", "woman": "NOUN", "figure": "NOUN", "someone": "PRON",
    "something": "PRON", "hand": "NOUN", "hands": "NOUN", "arm": "NOUN", "arms": "NOUN",
    "leg": "NOUN", "foot": "NOUN", "head": "NOUN", "knees": "NOUN", "floor": "NOUN",
    "chair": "NOUN", "circle": "NOUN", "seat": "NOUN", "toes": "NOUN", "waist": "NOUN",
    "music": "NOUN", "air": "NOUN", "way": "NOUN", "moment": "NOUN", "pace": "NOUN",
    "fists": "NOUN", "punches": "NOUN", "squats": "NOUN", "jacks": "NOUN", "jumps": "VERB",
    "jump": "NOUN", "kick": "NOUN", "crouch": "NOUN", "times": "NOUN",
    "left": "ADJ", "right": "ADJ", "other": "ADJ", "full": "ADJ", "long": "ADJ", "low": "ADJ",
    "high": "ADV", "slow": "ADJ", "brisk": "ADJ", "front": "NOUN", "jumping": "VERB",
    "star": "NOUN", "hello": "INTJ", "once": "ADV", "twice": "ADV", "three": "NUM",
    "quickly": "ADV", "slowly": "ADV", "fast": "ADV", "carefully": "ADV", "normally": "ADV",
    "steadily": "ADV", "forward": "ADV", "backwards": "ADV", "sideways": "ADV", "then": "ADV",
    "around": "ADV", "down": "ADV", "up": "ADP", "back": "ADV", "again": "ADV", "still": "ADV",
    "briefly": "ADV", "energetically": "ADV", "completely": "ADV", "straight": "ADV",
    "out": "ADV", "after": "ADP", "that": "PRON", "in": "ADP", "on": "ADP", "to": "ADP",
    "with": "ADP", "over": "ADP", "into": "ADP", "of": "ADP", "at": "ADP", "above": "ADP",
    "before": "ADP", "without": "ADP", "for": "ADP", "while": "SCONJ", "and": "CCONJ", "is": "AUX",
    "place": "NOUN", "knee": "NOUN", "chest": "NOUN", "body": "NOUN", "torso": "NOUN",
    "shoulder": "NOUN", "ball": "NOUN", "side": "NOUN", "twists": "NOUN", "bends": "NOUN",
    "one": "NUM", "upper": "ADJ", "overhand": "ADV", "overhead": "ADV", "behind": "ADV",
    "across": "ADP", "crossed": "VERB",
    "cartwheel": "NOUN", "handstand": "NOUN", "hands": "NOUN", "roll": "NOUN",
    "backwards": "ADV", "ground": "NOUN", "stomach": "NOUN", "backflip": "NOUN",
    "somersault": "NOUN", "lunges": "NOUN", "lunge": "NOUN", "deep": "ADJ", "spinning": "ADJ",
    "spin": "NOUN", "heel": "NOUN", "buttock": "NOUN", "towards": "ADP", "elbow": "NOUN",
    "upper": "ADJ", "weight": "NOUN", "off": "ADP", "onto": "ADP", "from": "ADP",
    "lying": "VERB", "face": "NOUN", "under": "ADP", "all": "DET", "around": "ADV",
    "moment": "NOUN", "something": "PRON", "knee": "NOUN", "opposite": "ADJ", "each": "DET",
    "windmill": "NOUN", "toe": "NOUN", "split": "NOUN", "straddle": "NOUN", "apart": "ADV",
    "sideways": "ADV", "legs": "NOUN",
}
_VERB_LEMMA = {
    "walks": "walk", "runs": "run", "jogs": "jog", "sneaks": "sneak", "curving": "curve",
    "running": "run", "jogging": "jog", "walking": "walk", "moves": "move", "crouching": "crouch",
    "steps": "step", "shuffles": "shuffle", "turns": "turn", "rotates": "rotate", "spins": "spin",
    "leaps": "leap", "does": "do", "hops": "hop", "performs": "perform", "sits": "sit",
    "takes": "take", "gets": "get", "standing": "stand", "stands": "stand", "squats": "squat",
    "crouches": "crouch", "stays": "stay", "held": "hold", "waves": "wave", "raises": "raise",
    "kicks": "kick", "throws": "throw", "boxes": "box", "punching": "punch", "crawls": "crawl",
    "crawling": "crawl", "dances": "dance", "spinning": "spin", "sways": "sway", "looks": "look",
    "looking": "look", "waits": "wait", "moving": "move", "holds": "hold", "lifts": "lift",
    "stretches": "stretch", "bends": "bend", "touch": "touch", "leans": "lean", "pick": "pick",
    "face": "face", "side": "side", "punches": "punch", "kneels": "kneel", "goes": "go",
    "tilts": "tilt", "reaches": "reach", "twists": "twist", "claps": "clap", "applauds": "applaud",
    "crosses": "cross", "folds": "fold", "winds": "wind",
    "cartwheels": "cartwheel", "turns": "turn", "kicks": "kick", "rolls": "roll", "tucks": "tuck",
    "pushes": "push", "rises": "rise", "lies": "lie", "lowers": "lower", "flips": "flip",
    "lunges": "lunge", "pulls": "pull", "swings": "swing", "bends": "bend", "shifts": "shift",
    "picks": "pick", "touches": "touch", "sits": "sit", "moves": "move", "slides": "slide",
    "stretches": "stretch", "twists": "twist",
}


def mirror_caption(caption: str) -> str:
    """The caption of the mirrored motion: "left" and "right" swapped."""
    return " ".join({"left": "right", "right": "left"}.get(w, w) for w in caption.split(" "))


def tokenize(caption: str) -> str:
    """HumanML3D-style ``word/POS`` tokens (lemmatised verbs) for a caption."""
    toks = []
    words = caption.lower().replace(",", " ").split()
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        if w in _VERB_LEMMA and (w not in _POS or prev in ("person", "someone", "man", "woman",
                                                             "figure", "then", "and", "is")):
            toks.append(f"{_VERB_LEMMA[w]}/VERB")
        else:
            toks.append(f"{w}/{_POS.get(w, 'NOUN')}")
    return " ".join(toks)


def caption_lines(captions: list[str]) -> str:
    return "".join(f"{c}#{tokenize(c)}#0.0#0.0\n" for c in captions)


