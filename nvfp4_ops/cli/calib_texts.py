"""Calibration texts: a built-in varied English set, and the loader of ``--calib`` files.

The built-in set (:func:`default_texts`) was written for this project: news-like reports,
instructions, dialogue, questions, code, numbers, lists, tables and short paragraphs, so
that a calibration run sees prose, punctuation, digits, symbols and indentation. It is
deterministic (same texts, same order, on every call).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple, Union

__all__ = ["default_texts", "calibration_and_eval_texts", "load_texts"]

_NEWS = [
    "The city council voted on Tuesday to extend the night bus service until two in the morning.",
    "Heavy rain flooded several roads in the valley, and officials asked drivers to stay home.",
    "A small bakery on Mill Street won the regional award for the best sourdough bread.",
    "The central bank left interest rates unchanged, citing steady prices and rising wages.",
    "Engineers finished the new bridge three weeks ahead of schedule and under budget.",
    "Researchers reported that the coral reef had partly recovered after two calm summers.",
    "The museum will reopen its east wing in May with a collection of early maps.",
    "Local farmers expect a good harvest of apples despite a cold and late spring.",
    "The football club signed a young goalkeeper from the second division on a four-year deal.",
    "A power outage left about twelve thousand homes without electricity for six hours.",
    "The school board approved a plan to add solar panels to every primary school roof.",
    "Train services between the two cities were suspended after a fallen tree blocked the line.",
    "The company said quarterly revenue grew by eight percent, mostly from online sales.",
    "Volunteers planted more than two thousand trees along the river on Saturday morning.",
    "The health ministry launched a campaign encouraging adults to walk thirty minutes a day.",
    "A new library branch opened in the northern district, with a room for study groups.",
    "Fishermen in the harbour town protested against the new limits on the autumn catch.",
    "The airport added direct flights to three coastal cities starting next month.",
    "Scientists launched a weather balloon to measure winds high above the mountains.",
    "The orchestra announced a free concert in the park to celebrate its fiftieth season.",
    "After a long debate, parliament passed the bill on public transport funding.",
    "Prices of fresh vegetables fell at the market as the summer crops arrived.",
    "A rare bird, not seen in the region for decades, was spotted near the lake.",
    "The hospital opened a new wing for children, funded largely by local donations.",
    "Firefighters contained the forest fire before it reached the nearby villages.",
    "The tech startup raised fresh funding to expand its team of software engineers.",
    "Officials reminded residents that the recycling collection moves to Thursdays.",
    "The marathon drew a record field of runners despite strong headwinds on the coast.",
    "A court ruled that the factory must reduce the noise it makes at night.",
    "The ferry company ordered two electric boats for the short crossing to the island.",
]

_INSTRUCTIONS = [
    "Preheat the oven to 200 degrees, then roast the vegetables for twenty-five minutes.",
    "To reset the router, hold the small button on the back for ten seconds.",
    "Write a short email to your manager explaining why the report will be one day late.",
    "Summarize the following paragraph in one sentence, keeping the main argument.",
    "Translate the phrase 'good morning, how are you?' into French and Spanish.",
    "List three advantages and three disadvantages of working from home.",
    "Explain the difference between weather and climate to a ten-year-old.",
    "Before painting the wall, clean it, let it dry, and cover the floor with old sheets.",
    "Give me a packing list for a three-day hiking trip in the mountains.",
    "Rewrite this sentence so that it sounds more polite: send me the file now.",
    "Describe the steps needed to change a flat tire on a bicycle.",
    "Sort the following words alphabetically: pear, apple, mango, banana, cherry.",
    "Water the tomato plants in the early morning and avoid wetting the leaves.",
    "Check that the power cable is connected before you call the help desk.",
    "Answer the question using only the information in the text above.",
    "Draft a polite reply declining the meeting invitation for Friday afternoon.",
    "Fold the paper in half twice, then cut along the dotted line.",
    "Suggest a name for a cafe that serves breakfast all day.",
    "Plan a weekly budget for a student with a monthly income of 900 euros.",
    "Explain, step by step, how to solve a quadratic equation.",
    "Mix the flour and salt first, then add the water slowly while stirring.",
    "Please classify each review as positive, negative or neutral.",
    "Create a simple exercise routine that takes less than fifteen minutes.",
    "Turn off the main valve before replacing the kitchen tap.",
    "Identify the verb in each of the following sentences.",
]

_DIALOGUE = [
    "\"Did you lock the back door?\" she asked. \"I think so,\" he said, \"but I'll check.\"",
    "User: What time does the pharmacy close?\nAssistant: It closes at eight in the evening on weekdays.",
    "- Are we still meeting at noon?\n- Yes, at the cafe near the station.",
    "Customer: My order arrived damaged.\nAgent: I'm sorry to hear that. Could you send a photo of the box?",
    "\"It's only a short walk,\" said the guide, pointing at the hill that seemed very far away.",
    "User: Can you recommend a book about the history of science?\nAssistant: A good start is a general survey that covers astronomy, chemistry and medicine.",
    "\"Where did you put the keys?\" \"On the shelf, next to the plant.\" \"Which plant?\"",
    "Teacher: Who can tell me what photosynthesis is?\nStudent: It's how plants make food from light.",
    "Q: How many legs does a spider have?\nA: Eight.",
    "\"I don't know the way,\" admitted the driver, \"but I know someone who does.\"",
    "User: Convert 5 miles to kilometres.\nAssistant: 5 miles is about 8.05 kilometres.",
    "Doctor: How long have you had the cough?\nPatient: About a week, mostly at night.",
    "\"Happy birthday!\" they shouted as the lights came on.",
    "Interviewer: Why do you want this job?\nCandidate: I enjoy solving problems with people who care about the details.",
    "User: Is it going to rain tomorrow?\nAssistant: The forecast says light showers in the afternoon.",
    "\"We should leave early,\" said Maria. \"The traffic is terrible on Fridays.\"",
    "Pilot: Ladies and gentlemen, we are starting our descent and will land in twenty minutes.",
    "User: Tell me a fun fact.\nAssistant: Honey found in ancient tombs can still be edible.",
    "\"That's not what I meant,\" he said quietly, \"and you know it.\"",
    "Support: Have you tried restarting the application?\nUser: Twice. The error is still there.",
]

_QUESTIONS = [
    "Why is the sky blue during the day and red at sunset?",
    "What is the capital of Australia, and why was it chosen?",
    "How do vaccines train the immune system?",
    "What happens to a ball thrown upward on the Moon?",
    "Which is larger, two to the power of ten or ten squared?",
    "How long does it take light from the Sun to reach the Earth?",
    "Can you explain what a neural network is in simple terms?",
    "What are the main causes of inflation?",
    "Is a tomato a fruit or a vegetable?",
    "How does a refrigerator keep food cold?",
    "What is the difference between a virus and a bacterium?",
    "Why do leaves change colour in autumn?",
    "How many minutes are there in a week?",
    "What makes a good password?",
    "Who invented the printing press, and when?",
    "What is the boiling point of water at the top of a high mountain?",
    "How do bees communicate where flowers are?",
    "What is the tallest animal on land?",
    "Why do we have leap years?",
    "How are rainbows formed?",
]

_CODE = [
    "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i, 'is even')",
    "import json\n\nwith open('config.json') as f:\n    config = json.load(f)\nprint(config['name'])",
    "SELECT name, COUNT(*) AS orders FROM customers JOIN orders USING (customer_id) GROUP BY name ORDER BY orders DESC;",
    "function greet(name) {\n  return `Hello, ${name}!`;\n}\nconsole.log(greet('world'));",
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"%d\\n\", 42);\n    return 0;\n}",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.items.append(x)\n\n    def pop(self):\n        return self.items.pop()",
    "git checkout -b feature/login && git commit -am 'Add login form' && git push origin feature/login",
    "fn main() {\n    let v: Vec<i32> = (1..=5).collect();\n    println!(\"{:?}\", v.iter().sum::<i32>());\n}",
    "x = [n * n for n in range(1, 11) if n % 3 != 0]",
    "<ul>\n  <li><a href=\"/home\">Home</a></li>\n  <li><a href=\"/about\">About</a></li>\n</ul>",
    "docker run --rm -p 8080:80 -v $(pwd)/site:/usr/share/nginx/html nginx:latest",
    "try:\n    value = int(text)\nexcept ValueError:\n    value = 0",
    "{\"id\": 17, \"name\": \"sensor-a\", \"readings\": [21.5, 21.7, 22.0], \"active\": true}",
    "while (left < right) {\n  int mid = left + (right - left) / 2;\n  if (a[mid] < target) left = mid + 1; else right = mid;\n}",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT NOT NULL, year INTEGER);",
    "const total = items.reduce((sum, item) => sum + item.price * item.qty, 0);",
    "ls -la /var/log | grep -i error | sort | uniq -c",
    "if __name__ == '__main__':\n    import sys\n    sys.exit(main(sys.argv[1:]))",
    "public static int max(int[] a) {\n    int m = a[0];\n    for (int x : a) if (x > m) m = x;\n    return m;\n}",
    "# TODO: handle the case where the list is empty\nresult = sum(values) / len(values)",
    "matrix = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]\ntransposed = list(zip(*matrix))",
    "export PATH=\"$HOME/.local/bin:$PATH\"",
    "assert parse_date('2024-03-01').month == 3, 'month should be March'",
]

_PARAGRAPHS = [
    "The village sits at the end of a narrow valley. In winter the sun disappears behind the ridge "
    "by three o'clock, and the streets grow quiet. In summer, hikers fill the two small inns, and "
    "the baker opens an hour earlier to keep up with them.",
    "Good documentation answers three questions: what the tool does, how to use it, and what to do "
    "when something goes wrong. Examples help more than long explanations, and every example should "
    "actually run.",
    "When the first snow fell, the children ran outside without their coats. Their mother called "
    "them back, laughing, and handed out scarves and gloves before letting them go again.",
    "Batteries lose capacity slowly over time. Keeping them between twenty and eighty percent "
    "charged, and away from heat, can make them last noticeably longer.",
    "The meeting started late because the projector would not connect. By the time it worked, half "
    "of the agenda had been discussed anyway, so the team decided to skip the slides.",
    "Rivers shape the land around them. Over thousands of years they carve valleys, carry sand to "
    "the sea and build wide, flat plains where farmers later grow their crops.",
    "A healthy breakfast does not need to be complicated: some fruit, a slice of wholegrain bread "
    "and a glass of water already make a good start to the day.",
    "The old lighthouse has not guided ships for decades. Today it is a small museum, and on clear "
    "evenings visitors climb its spiral stairs to watch the sun set over the bay.",
    "Learning a language takes patience. Short daily practice usually works better than long "
    "sessions once a week, and speaking early, even with mistakes, builds confidence.",
    "The software update fixes a crash that occurred when saving large files, improves start-up "
    "time and adds a dark theme that many users had asked for.",
    "Our neighbour keeps bees in the garden. Every September she brings us a jar of honey, and "
    "every September we promise to return the jar, and somehow never do.",
    "Cities are experimenting with car-free streets on Sundays. Shops report more visitors, and "
    "families enjoy cycling where cars usually drive.",
    "The storm passed in the night. In the morning the beach was covered with seaweed, driftwood "
    "and, here and there, a lost sandal.",
    "Saving energy at home can be simple: switch off lights in empty rooms, wash clothes at lower "
    "temperatures and close the curtains on cold evenings.",
    "The detective looked at the muddy footprints, then at the clean carpet in the hall, and "
    "smiled for the first time that day.",
]

_LISTS = [
    "Shopping list:\n- milk\n- eggs\n- two loaves of bread\n- olive oil\n- coffee",
    "Agenda:\n1. Welcome\n2. Budget review\n3. New projects\n4. Questions\n5. Close",
    "Ingredients: 250 g flour, 2 eggs, 300 ml milk, a pinch of salt, 1 tbsp butter.",
    "Pros: fast, cheap, easy to repair. Cons: noisy, heavy, short warranty.",
    "Top five tips for better sleep: keep a schedule, limit screens, avoid late coffee, stay active, keep the room cool.",
    "Checklist before a flight: passport, boarding pass, charger, medicine, house keys.",
    "Colours of the rainbow: red, orange, yellow, green, blue, indigo, violet.",
    "Planets in order: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune.",
    "| Name  | Age | City   |\n|-------|-----|--------|\n| Anna  | 34  | Berlin |\n| Tomas | 29  | Prague |",
    "Week plan - Mon: gym; Tue: swimming; Wed: rest; Thu: running; Fri: yoga; Sat: hike; Sun: rest.",
    "Steps: (a) read the task, (b) make a plan, (c) do the work, (d) check the result.",
    "Required documents:\n* ID card\n* proof of address\n* two photos\n* the signed form",
]

_SHORT = [
    "The cat slept on the warm windowsill all afternoon.",
    "Please close the door quietly.",
    "I would like a cup of tea with lemon, please.",
    "Our train leaves at 7:45 from platform 3.",
    "She finished the marathon in 3 hours and 52 minutes.",
    "It was the coldest night of the year.",
    "The results will be published next Monday.",
    "He forgot his umbrella again.",
    "Thank you for your patience while we fix the problem.",
    "The password must contain at least twelve characters.",
    "This product contains nuts.",
    "The store is closed on public holidays.",
    "My favourite season is autumn because of the colours.",
    "Two plus two equals four.",
    "The meeting has been moved to room 204.",
    "Do not feed the animals.",
    "We're out of printer paper again!",
    "The quick brown fox jumps over the lazy dog.",
    "Your package was delivered to the front desk.",
    "Warning: the floor is wet.",
    "They painted the fence white last weekend.",
    "Let's meet at the corner of 5th Avenue and Main Street.",
    "The price includes tax and free delivery.",
    "Call me when you get home, OK?",
    "The river froze for the first time in ten years.",
]

_NAMES = ["Alice", "Ben", "Chen", "Dara", "Elif", "Farah", "Goran", "Hana", "Ivan", "Jonas",
          "Kemal", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
_ITEMS = [("notebooks", 2.5), ("pens", 0.8), ("apples", 0.35), ("tickets", 12.0),
          ("coffees", 3.2), ("batteries", 1.75), ("stamps", 1.1), ("plates", 4.0)]
_CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Toronto", "Cairo", "Seoul",
           "Madrid", "Perth"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]


def _generated() -> List[str]:
    """Texts with numbers, dates, sums and records, made from small word lists (fixed order)."""
    out = []
    for i, name in enumerate(_NAMES):
        item, price = _ITEMS[i % len(_ITEMS)]
        n = 3 + (i * 7) % 11
        out.append(f"{name} bought {n} {item} at {price:.2f} euros each and paid "
                   f"{n * price:.2f} euros in total.")
    for i, city in enumerate(_CITIES):
        t, r = 8 + (i * 5) % 25, (i * 13) % 40
        out.append(f"Weather in {city}: {t} degrees Celsius, {r} mm of rain expected, "
                   f"wind {5 + i * 3} km/h from the {['north', 'south', 'east', 'west'][i % 4]}.")
    for i, m in enumerate(_MONTHS):
        d = 1 + (i * 9) % 28
        out.append(f"The invoice dated {d} {m} 2023 (no. {1000 + 37 * i}) is due within 30 days.")
    for a in range(3, 23, 2):
        b = a * 3 + 1
        out.append(f"{a} x {b} = {a * b}, and {a * b} / {a} = {b}.")
    for i in range(15):
        x = 17 * i + 4
        out.append(f"Order #{40213 + i * 97}: {x} units shipped, {i % 4} returned, "
                   f"status {'delivered' if i % 3 else 'in transit'}.")
    for i in range(10):
        out.append(f"{_NAMES[i]}: \"How much is the ticket to {_CITIES[i]}?\" "
                   f"{_NAMES[-1 - i]}: \"{20 + 9 * i} euros one way, {36 + 16 * i} return.\"")
    for i in range(10):
        vals = [(i * 7 + k * 5) % 23 for k in range(6)]
        out.append(f"data = {vals}\nprint(sum(data), max(data), sorted(data)[:3])")
    for i in range(10):
        out.append(f"Step {i + 1} of 10: measure {0.5 * (i + 1):.1f} litres of water and "
                   f"heat it to {40 + 5 * i} degrees.")
    return out


def _all_texts() -> List[str]:
    """Every built-in text, the families interleaved so that any prefix is varied."""
    fams = [_NEWS, _INSTRUCTIONS, _DIALOGUE, _QUESTIONS, _CODE, _PARAGRAPHS, _LISTS, _SHORT,
            _generated()]
    return [f[i] for i in range(max(map(len, fams))) for f in fams if i < len(f)]


def default_texts(n: Optional[int] = None) -> List[str]:
    """The built-in calibration texts (a few hundred, families interleaved so that any
    prefix is varied); the first ``n`` of them when ``n`` is given."""
    texts = _all_texts()
    if n is None:
        return texts
    if n < 1 or n > len(texts):
        raise ValueError(f"n must be in [1, {len(texts)}] (the built-in texts), got {n}")
    return texts[:n]


def calibration_and_eval_texts(n_eval: int) -> Tuple[List[str], List[str]]:
    """The built-in texts in two disjoint sets ``(calibration, evaluation)``: the last
    ``n_eval`` texts for the end-to-end check, the ones before them to calibrate on.
    ``n_eval`` may be at most half of the built-in texts (so that calibration keeps the
    other half)."""
    texts = _all_texts()
    most = len(texts) // 2
    if not 0 <= n_eval <= most:
        raise ValueError(f"n_eval must be in [0, {most}] (half of the {len(texts)} built-in "
                         f"texts), got {n_eval}")
    return texts[:len(texts) - n_eval], texts[len(texts) - n_eval:]


def load_texts(path: Union[str, Path]) -> Union[List[str], List[List[int]]]:
    """Calibration texts of a ``--calib`` file.

    * ``.txt``: one text per non-empty line;
    * ``.json``: a list of strings, or a list of token-id lists;
    * ``.jsonl``: one JSON object per non-empty line with a string ``"text"`` field.

    Raises ValueError, with one line naming the file, when it is missing, unreadable,
    malformed or holds no text.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such calibration file")
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: cannot read it as UTF-8 text ({type(e).__name__})") from None
    suffix = p.suffix.lower()
    if suffix == ".txt":
        texts = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    elif suffix == ".json":
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        if isinstance(data, list) and all(isinstance(s, str) for s in data):
            texts = [s for s in data if s.strip()]
        elif isinstance(data, list) and all(
                isinstance(r, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                            for i in r) for r in data):
            texts = [r for r in data if r]
        else:
            raise ValueError(f"{p}: expected a JSON list of strings or of token-id lists")
    elif suffix == ".jsonl":
        texts = []
        for no, ln in enumerate(raw.splitlines(), 1):
            if not ln.strip():
                continue
            try:
                d = json.loads(ln)
            except ValueError as e:
                raise ValueError(f"{p}: line {no} is not valid JSON ({e})") from None
            if not isinstance(d, dict) or not isinstance(d.get("text"), str):
                raise ValueError(f"{p}: line {no} has no string \"text\" field")
            if d["text"].strip():
                texts.append(d["text"])
    else:
        raise ValueError(f"{p}: unknown kind of calibration file {suffix!r}; expected .txt, "
                         ".json or .jsonl")
    if not texts:
        raise ValueError(f"{p}: holds no calibration text")
    return texts
