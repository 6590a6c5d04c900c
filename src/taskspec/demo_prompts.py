"""A handful of prompts for the demo: math, code, chat and a repetitive rewrite (where prompt lookup shines)."""

DEMO_PROMPTS = [
    ("math", "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
             "May. How many clips did Natalia sell altogether in April and May?\nAnswer: Let's think step by step."),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number, computed iteratively.\"\"\"\n"),
    ("chat", "The three most important things to know before adopting a dog are"),
    ("rewrite", "Rewrite the list below in alphabetical order.\nList: banana, cherry, apple, mango, kiwi, grape\n"
                "Sorted list: apple, banana, cherry, grape, kiwi, mango\nList: tiger, lion, zebra, bear, wolf, fox\n"
                "Sorted list:"),
    ("summary", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
                "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.\n"
                "In one sentence, the Eiffel Tower is"),
]
