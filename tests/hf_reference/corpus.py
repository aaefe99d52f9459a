"""A fixed English text, built in, that the reference checkpoints' tokenizers are trained on (so
that nothing is downloaded), with a few accented words and CJK characters so that those are in
the vocabularies too."""

from __future__ import annotations

import itertools

HANDWRITTEN = [
    "The film was a delight from start to finish.",
    "I did not enjoy the long and tedious second act.",
    "Her performance is the best thing in this movie.",
    "The plot makes no sense, but the music is wonderful.",
    "A quiet, thoughtful story about a family in a small town.",
    "We left the theatre before the ending.",
    "The actors seem bored and the dialogue is flat.",
    "An unexpected twist saves an otherwise ordinary thriller.",
    "This is the kind of comedy that makes you laugh out loud.",
    "The camera work is beautiful, the script is not.",
    "Nobody should pay money to see this.",
    "It is funny, warm and surprisingly moving.",
    "The story drags, and the characters never come alive.",
    "What a wonderful surprise this little film turned out to be!",
    "The director has made better movies than this one.",
    "I would watch it again tomorrow.",
    "The special effects look cheap and dated.",
    "Every scene is packed with energy and wit.",
    "The soundtrack was composed by a young pianist from Paris.",
    "Shipping took three weeks and the box arrived damaged.",
    "The battery lasts two days, which is more than I expected.",
    "Customer service answered my question within an hour.",
    "The screen cracked after a week of normal use.",
    "Great value for the price, I recommend it to everyone.",
    "The instructions were confusing and parts were missing.",
    "Stocks fell sharply on Monday after the bank raised interest rates.",
    "The team won the championship for the third year in a row.",
    "Scientists discovered a new species of frog in the rain forest.",
    "The city council approved the budget for the new library.",
    "Heavy rain caused flooding in several northern villages.",
    "The company reported record profits in the last quarter.",
    "A new vaccine showed promising results in early trials.",
    "The museum will open a new exhibition of modern art next month.",
    "Engineers are testing a faster train between the two capitals.",
    "The election results will be announced late tonight.",
    "Researchers trained a small neural network to classify text.",
    "The model reads a sentence and predicts a label for it.",
    "Tokenizers split words into smaller pieces called tokens.",
    "Please send the report to the whole team before Friday.",
    "Meet me at the café near the station at noon.",
    "She wrote her résumé in a naïve but charming style.",
    "The jalapeño soup at the crème brûlée place was too spicy.",
    "Zoë and José visited Zürich and São Paulo last year.",
    "Tokyo is called 東京 and Japan is called 日本 in Japanese.",
    "The word for water in Chinese is 水, and for fire it is 火.",
    "Beijing is 北京 and the Chinese language is 中文.",
    "UPPER CASE TEXT SHOULD ALSO BE SEEN BY THE TOKENIZER.",
    "Numbers like 42, 3.14 and 2026 appear in many texts.",
    "Email me at someone@example.com or call 555-0100.",
    "Don't stop, won't stop, can't stop: it's all the same.",
]

SUBJECTS = ["The new phone", "This restaurant", "The hotel room", "My old laptop", "The concert",
            "The teacher", "Our neighbour", "The weather", "The football match", "The novel"]
VERDICTS = ["was excellent", "was terrible", "felt rather average", "exceeded every expectation",
            "disappointed us badly", "was surprisingly good", "could have been much better"]
REASONS = ["because of the friendly staff.", "and we will never return.", "despite the high price.",
           "although the start was slow.", "so I told all my friends about it."]


def sentences() -> list[str]:
    """About 400 sentences: the handwritten ones, then templated reviews (every subject, verdict
    and reason combination, in a fixed order)."""
    templated = [f"{s} {v} {r}" for s, v, r in itertools.product(SUBJECTS, VERDICTS, REASONS)]
    return HANDWRITTEN + templated
