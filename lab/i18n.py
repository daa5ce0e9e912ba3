"""Every text the learner sees, in English and Russian, in one place."""
from __future__ import annotations

LANGUAGES = {"en": "English", "ru": "Русский"}

TEXT = {
    "en": {
        "app_title": "pd-lab: disaggregated prefill, live",
        "language": "Language",
        "playground": "Playground",
        "playground_intro": "Send a prompt to the real engine running {model} on {device}. "
                            "The answer streams token by token; below it are the request's real timings.",
        "prompt": "Your prompt",
        "default_prompt": "Explain in two sentences what a KV cache is.",
        "max_tokens": "Max new tokens",
        "temperature": "Temperature (0 = greedy)",
        "generate": "Generate",
        "loading": "Loading the model (the first start dequantizes it, about 30 s)...",
        "ttft": "TTFT",
        "itl_p50": "ITL p50",
        "tokens": "Tokens",
        "finish": "Finish",
        "error": "Request refused: {error}",
    },
    "ru": {
        "app_title": "pd-lab: disaggregated prefill вживую",
        "language": "Язык",
        "playground": "Песочница",
        "playground_intro": "Отправьте промпт настоящему движку: {model} на {device}. "
                            "Ответ приходит по токену; ниже — реальные тайминги запроса.",
        "prompt": "Ваш промпт",
        "default_prompt": "Объясни в двух предложениях, что такое KV cache.",
        "max_tokens": "Максимум новых токенов",
        "temperature": "Температура (0 = жадный выбор)",
        "generate": "Сгенерировать",
        "loading": "Загружаем модель (первый запуск распаковывает её, около 30 с)...",
        "ttft": "TTFT",
        "itl_p50": "ITL p50",
        "tokens": "Токены",
        "finish": "Завершение",
        "error": "Запрос отклонён: {error}",
    },
}


def t(lang: str, key: str, **values) -> str:
    return TEXT[lang][key].format(**values) if values else TEXT[lang][key]
