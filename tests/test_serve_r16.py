"""`minilora serve` reads /tokenize, chat message content parts, tool_choice and the LoRA routes as vLLM's pydantic
models do (vllm/entrypoints/serve/tokenize/protocol.py, chat_utils.py's ChatCompletionContentPartParam,
chat_completion/protocol.py's tool_choice and check_tool_usage, serve/lora/protocol.py).

| what a user sends                          | before (r15)                     | now (vLLM's)                     |
|--------------------------------------------|----------------------------------|----------------------------------|
| /tokenize {"prompt", "messages"} (both)    | the prompt's ids                 | the chat's: pydantic's union     |
|                                            |                                  |  picks TokenizeChatRequest       |
| /tokenize {"prompt": 5, "messages": [...]} | 400 prompt                       | 200, the chat's ids              |
| /tokenize {} / {"model": "a"}              | 400 "prompt: Field required"     | 400 naming both members' errors  |
| /detokenize {"tokens": [72, -1]}           | 400 "each token id must be in"   | 400 pydantic's "tokens.1: Input  |
|                                            |                                  |  should be greater than or ..."  |
| load_lora_adapter without lora_path /      | 400 "Both ... must be provided." | 400 "lora_path: Field required"  |
|  lora_name; unload_lora_adapter without    |  / InvalidUserInput              |  (vLLM's required fields)        |
|  lora_name                                 |                                  |                                  |
| content ["Hi", {"type": "refusal", ...},   | 400 (text parts only)            | their texts joined by newlines   |
|  {"type": "thinking", ...}]                |                                  |                                  |
| a message without content; an assistant's  | 400                              | content "" (vLLM's [] parts)     |
|  content null (no tool calls)              |                                  |                                  |
| a user's content null                      | 400 "messages must be ..."       | 400 pydantic's: the custom       |
|                                            |                                  |  message's content: str or list |
| tool_calls sent back without id / type, or | 200                              | 400 messages: OpenAI's tool call |
|  arguments as an object                    |                                  |  param (arguments: JSON text)    |
| content [{"type": "text", "text": 5}],     | 400 "messages must be ..."       | 400 pydantic's, the part's path  |
|  image_url detail "huge"                   |                                  |                                  |
| content [{"type": "image_url", ...}]       | 400 "messages must be ..."       | 400 "The model is not            |
|  (valid)                                   |                                  |  multimodal." (vLLM's words)     |
| tool_choice {"type": "tool", "function":   | 200 (the named call)             | 400 tool_choice: pydantic's      |
|  {...}}                                    |                                  |                                  |
| tool_choice "any" beside temperature "x"   | 400 temperature                  | 400 tool_choice: check_tool_     |
|                                            |                                  |  usage runs before the types     |
| a POST whose Content-Type is not           | taken                            | 400 "Unsupported Media Type:     |
|  application/json (curl -d without -H)     |                                  |  Only 'application/json' is      |
|                                            |                                  |  allowed" (validate_json_request)|
| a message's other keys ("mood"), an        | passed to the template as sent   | vLLM's: role, content, an        |
|  assistant's reasoning_content             |                                  |  assistant's tool_calls and      |
|                                            |                                  |  reasoning (+ reasoning_content),|
|                                            |                                  |  a tool's tool_call_id, a name   |
| a chat template that loops over a          | the joined text (a loop over a   | vLLM's "openai" content format:  |
|  message's content                         |  string's characters)            |  [{"type": "text", "text"}, ...] |
| chat messages []                           | 400 "messages must be a non-     | 400 transformers' "Cannot apply  |
|                                            |  empty list ...", param messages |  chat template to an empty ..."  |
| /v1/completions max_tokens null            | the rest of the context          | 16, as left out (vLLM's          |
|                                            |                                  |  normalize_null_max_tokens)      |
| /v1/completions with prompt "", null or    | "": its BOS; null or left out:   | 400 "Either prompt or            |
|  left out                                  |  400 "prompt must be a string,   |  prompt_embeds must be provided  |
|                                            |  ..."                            |  and non-empty."                 |
"""
import pytest

pytest.importorskip("pydantic")
pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from minilora.serve import Engine  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, two_adapters  # noqa: E402

MESSAGES = [{"role": "user", "content": "Hi"}]
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def client():
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    engine = Engine(two_adapters(), tok, max_batch_size=2, max_queue=8)
    # (requests send chat templates of their own: vLLM's --trust-request-chat-template)
    with TestClient(create_app(engine, "tiny", trust_request_chat_template=True)) as served:
        yield served


def tokens(client, **body):
    response = client.post("/tokenize", json={"model": "a", **body})
    assert response.status_code == 200, response.text
    return response.json()["tokens"]


def error_of(response):
    assert response.status_code == 400, response.text
    return response.json()["error"]


def chat_error(client, **body):
    return error_of(client.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES, "max_tokens": 1,
                                                               **body}))


def test_tokenize_takes_the_member_pydantics_union_picks(client):
    chat = tokens(client, messages=MESSAGES)
    assert tokens(client, prompt="zz", messages=MESSAGES) == chat
    assert tokens(client, prompt=5, messages=MESSAGES) == chat  # (the completion member refuses it, the chat takes it)
    # the chat member's own check refuses both flags: the completion member takes the body (its prompt)
    assert tokens(client, prompt="zz", continue_final_message=True, add_generation_prompt=True) == \
        tokens(client, prompt="zz")


def test_tokenize_that_no_member_takes_names_each_members_refusal(client):
    error = error_of(client.post("/tokenize", json={}))
    member = "'function-wrap[__log_extra_fields__()]'"  # (pydantic's name of each member: vLLM's wrap validator)
    assert error["message"].startswith(
        f"2 validation errors:\n  {{'type': 'missing', 'loc': ('body', {member}, 'prompt'), 'msg': 'Field required', "
        f"'input': {{}}}}\n  {{'type': 'missing', 'loc': ('body', {member}, 'messages'), 'msg': 'Field required', "
        "'input': {}}\n\n  File ")
    assert (error["param"], error["type"]) == ("body.prompt", "Bad Request")
    error = error_of(client.post("/tokenize", json={"messages": MESSAGES, "return_token_strs": "maybe"}))
    assert error["param"] == "body.prompt"  # (vLLM's param: the first error's, the completion member's)
    assert f"'loc': ('body', {member}, 'return_token_strs'), 'msg': 'Input should be a valid boolean" in \
        error["message"]


def test_detokenize_refuses_ids_outside_int64_with_pydantics_words(client):
    for ids, words in [([72, -1], "('body', 'tokens', 1), 'msg': 'Input should be greater than or equal to 0'"),
                       ([2**63], f"('body', 'tokens', 0), 'msg': 'Input should be less than or equal to {2**63 - 1}'")]:
        error = error_of(client.post("/detokenize", json={"tokens": ids}))
        assert words in error["message"] and error["param"] == "body.tokens." + words.split(", ")[2][0]


def test_lora_routes_refuse_a_field_left_out_as_vllms_required_fields(client):
    for route, body, missing in [("/v1/load_lora_adapter", {"lora_name": "c"}, "lora_path"),
                                 ("/v1/load_lora_adapter", {"lora_path": "/x"}, "lora_name"),
                                 ("/v1/unload_lora_adapter", {}, "lora_name")]:
        error = error_of(client.post(route, json=body))
        assert f"{{'type': 'missing', 'loc': ('body', '{missing}'), 'msg': 'Field required'" in error["message"]
        assert (error["param"], error["type"]) == (f"body.{missing}", "Bad Request")
    # an empty name or path is vLLM's own check's refusal, in its words
    error = error_of(client.post("/v1/load_lora_adapter", json={"lora_name": "c", "lora_path": ""}))
    assert (error["message"], error["type"]) == ("Both 'lora_name' and 'lora_path' must be provided.",
                                                 "InvalidUserInput")
    assert error_of(client.post("/v1/unload_lora_adapter", json={"lora_name": ""}))["type"] == "InvalidUserInput"


def test_text_parts_strings_refusals_and_thinking_join_with_newlines(client):
    joined = tokens(client, messages=[{"role": "user", "content": "Hi\nno\nhm\n"}])
    parts = ["Hi", {"type": "refusal", "refusal": "no"}, {"type": "thinking", "thinking": "hm", "closed": True},
             {"type": "text", "text": "", "cache_control": {"type": "ephemeral"}}]  # (a part's other keys ignored)
    assert tokens(client, messages=[{"role": "user", "content": parts}]) == joined


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": "user", "content": []},
                                     {"role": "assistant", "content": None}])
def test_a_message_without_content_is_empty_text(client, message):
    empty = tokens(client, messages=[{"role": message["role"], "content": ""}], add_generation_prompt=False)
    assert tokens(client, messages=[message], add_generation_prompt=False) == empty


def test_content_null_is_only_an_assistants(client):
    """OpenAI's assistant message (a member of vLLM's message union) takes content null; vLLM's custom message, the
    member other roles' messages are, takes text or parts only."""
    error = chat_error(client, messages=[{"role": "user", "content": None}])
    assert "{'type': 'string_type', 'loc': ('body', 'messages', 0, 'CustomChatCompletionMessageParam', 'content', " \
        "'str'), 'msg': 'Input should be a valid string', 'input': None}" in error["message"]
    assert error["param"] == "body.messages.0.ChatCompletionAssistantMessageParam.role"  # (the first error's)


def test_tool_calls_sent_back_are_openais_tool_call_params(client):
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": ""}}
    custom = {"id": "c2", "type": "custom", "custom": {"name": "grep", "input": "x"}}
    back = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [call, custom]}]
    assert tokens(client, messages=back)
    for wrong in ({"function": {"name": "weather", "arguments": "{}"}},  # (no id, no type)
                  {**call, "function": {"name": "weather", "arguments": {"unit": "c"}}}):  # (arguments not text)
        error = chat_error(client, messages=[back[0], {**back[1], "tool_calls": [wrong]}])
        assert error["param"].startswith("body.messages.1.") and "'loc': ('body', 'messages', 1, " in error["message"]


@pytest.mark.parametrize("part, words", [
    ({"type": "text", "text": 5}, "0, 'ChatCompletionContentPartTextParam', 'text'), 'msg': 'Input should be a valid "
                                  "string'"),
    ({"type": "image_url", "image_url": {"url": "x", "detail": "huge"}},
     "0, 'ChatCompletionContentPartImageParam', 'image_url', 'detail'), 'msg': \"Input should be 'auto', 'low' or "
     "'high'\""),
    ({"type": "video"}, "0, 'CustomChatCompletionContentSimpleVideoParam', 'video_url'), 'msg': 'Field required'")])
def test_a_part_of_no_member_of_vllms_union_is_pydantics_refusal(client, part, words):
    error = chat_error(client, messages=[{"role": "user", "content": [part]}])
    content = "'loc': ('body', 'messages', 0, 'CustomChatCompletionMessageParam', 'content', "
    assert content + "'list[union[" in error["message"] and words in error["message"]
    assert error["param"] == "body.messages.0.ChatCompletionAssistantMessageParam.role"  # (the first error's)


@pytest.mark.parametrize("part", [{"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                                  {"image_url": "https://x/y.png"}, {"type": "input_audio", "input_audio": {
                                      "data": "AAAA", "format": "wav"}}, {"video_url": "https://x/y.mp4"}])
def test_a_media_part_needs_a_multimodal_model(client, part):
    error = chat_error(client, messages=[{"role": "user", "content": ["Hi", part]}])
    assert (error["message"], error["param"]) == ("The model is not multimodal.", None)


def test_tool_choice_is_vllms_type_after_its_check_tool_usage(client):
    named = {"type": "tool", "function": {"name": "weather"}}
    error = chat_error(client, tools=[WEATHER], tool_choice=named)
    assert "'function-wrap[__log_extra_fields__()]', 'type'), 'msg': \"Input should be 'function'\"" in error["message"]
    assert error["param"] == "body.tool_choice"  # (its Literal member's loc, cleaned)
    # check_tool_usage reads the body before any field's type: its refusal (a ValueError) comes first
    error = chat_error(client, tools=[WEATHER], tool_choice="any", temperature="x")
    assert error["message"].startswith("1 validation error:\n  {'type': 'value_error', 'loc': ('body',), 'msg': "
                                       "'Value error, Invalid value for `tool_choice`: any!")
    assert error["param"] == "body"
    error = chat_error(client, tool_choice={"function": {"name": ""}}, tools=[WEATHER])
    assert "'msg': 'Value error, Invalid `name` in `function`: `` in `tool_choice`!" in error["message"]


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize",
                                   "/v1/load_lora_adapter", "/v1/unload_lora_adapter"])
def test_a_post_whose_content_type_is_not_json_is_refused_as_vllms_validate_json_request(client, route):
    """curl -d '{...}' without -H 'Content-Type: application/json' sends a form's type: vLLM refuses it."""
    body = '{"model": "a", "prompt": "Hi", "tokens": [72], "lora_name": "zz"}'
    for headers in ({"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}, {}):
        error = error_of(client.post(route, content=body, headers=headers))
        assert (error["message"], error["type"], error["param"]) == (
            "Unsupported Media Type: Only 'application/json' is allowed", "Bad Request", None)
    taken = client.post(route, content=body, headers={"content-type": "Application/JSON; charset=utf-8"})
    assert taken.status_code != 400 or "Unsupported Media Type" not in taken.text


@pytest.mark.parametrize("prompt", [{}, {"prompt": None}, {"prompt": ""}, {"prompt": "", "prompt_embeds": []}])
def test_a_completion_without_a_prompt_is_vllms_validate_prompt_and_prompt_embeds_refusal(client, prompt):
    error = error_of(client.post("/v1/completions", json={"model": "a", "max_tokens": 1, **prompt}))
    assert "'msg': 'Value error, Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)'" \
        in error["message"] and (error["param"], error["type"]) == ("prompt", "Bad Request")


def test_a_completions_max_tokens_null_is_taken_as_left_out_as_vllms_normalize_null_max_tokens(client):
    body = {"model": "a", "prompt": "Hi", "temperature": 0, "ignore_eos": True}
    for sent in ({}, {"max_tokens": None}):
        answer = client.post("/v1/completions", json={**body, **sent}).json()
        assert answer["usage"]["completion_tokens"] == 16, sent  # (was: the rest of the context for null)


def test_a_chat_without_messages_is_transformers_refusal_as_vllms(client):
    """vLLM's messages field takes an empty list (no min_length); rendering it is transformers' apply_chat_template's
    ValueError, vLLM's 400 with its words and no param (was minilora's own "messages must be a non-empty list")."""
    words = "Cannot apply chat template to an empty conversation. Provide at least one message."
    assert (chat_error(client, messages=[])["message"], chat_error(client, messages=[])["param"]) == (words, None)
    error = error_of(client.post("/tokenize", json={"model": "a", "messages": []}))
    assert (error["message"], error["param"]) == (words, None)


def test_a_message_reaches_the_template_with_the_keys_vllm_passes_on(client):
    """vLLM's _parse_chat_message_content builds each message anew: role, content, an assistant's tool_calls and
    reasoning (either name sent, passed on as both), a tool's tool_call_id, a name; other keys stay behind."""
    template = ("{% for m in messages %}{{ m.role }}|{{ m.name }}|{{ m.reasoning }}|{{ m.reasoning_content }}|"
                "{{ m.tool_call_id }}|{{ m.mood }};{% endfor %}")
    messages = [{"role": "user", "content": "Hi", "name": "ann", "mood": "glad", "reasoning": "hm"},
                {"role": "assistant", "content": "Yo", "reasoning_content": "think", "tool_call_id": "c0"},
                {"role": "tool", "content": "20C", "tool_call_id": "c1", "mood": "x"}]
    response = client.post("/v1/chat/completions", json={"model": "a", "messages": messages, "max_tokens": 1,
                                                         "chat_template": template, "return_token_ids": True})
    assert response.status_code == 200, response.text
    assert bytes(response.json()["prompt_token_ids"]).decode() == \
        "user|ann||||;assistant||think|think||;tool||||c1|;"


@pytest.mark.parametrize("template", [
    "{% for m in messages %}{% for c in m['content'] %}[{{ c['text'] }}]{% endfor %}{% endfor %}",
    "{% for m in messages %}{% for c in m.content %}[{{ c.text }}]{% endfor %}{% endfor %}",
    "{% set rest = messages[1:] %}{% for m in rest %}{% set parts = m['content'] %}{% for c in parts %}"
    "[{{ c['text'] }}]{% endfor %}{% endfor %}"])
def test_a_template_that_loops_over_content_gets_text_parts_as_vllms_openai_content_format(client, template):
    """vLLM's _detect_content_format: a chat template that loops over a message's content is given each message's
    content as a list of {"type": "text", "text"} parts (a text message: one); other templates the joined text."""
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": ["a", {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "Yo"}]
    response = client.post("/v1/chat/completions", json={"model": "a", "messages": messages, "max_tokens": 1,
                                                         "chat_template": template, "return_token_ids": True})
    assert response.status_code == 200, response.text
    shown = bytes(response.json()["prompt_token_ids"]).decode()
    assert shown == ("[a][b][Yo]" if "rest" in template else "[S][a][b][Yo]")
