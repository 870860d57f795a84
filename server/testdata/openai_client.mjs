// Drives hone's OpenAI-compatible API with the official openai npm client
// and prints what it saw as one JSON object for TestOpenAIClient to check.
// Environment: OPENAI_MODULE (the package's index.mjs), HONE_BASE_URL,
// HONE_TOKEN, HONE_MODEL.
import { pathToFileURL } from 'node:url';

const { default: OpenAI } = await import(pathToFileURL(process.env.OPENAI_MODULE).href);
const client = new OpenAI({ baseURL: process.env.HONE_BASE_URL, apiKey: process.env.HONE_TOKEN, maxRetries: 0 });
const model = process.env.HONE_MODEL;
const out = {};

const models = await client.models.list();
out.models = [];
for await (const m of models) out.models.push(m.id);

const messages = [{ role: 'user', content: 'What is 12 + 30?' }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
out.chat = { model: chat.model, object: chat.object, text: chat.choices[0].message.content,
  role: chat.choices[0].message.role, finish: chat.choices[0].finish_reason, usage: chat.usage };

const stream = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0,
  stream: true, stream_options: { include_usage: true } });
out.stream = { text: '', finish: null, chunks: 0, usage: null, models: [] };
for await (const chunk of stream) {
  out.stream.chunks++;
  if (!out.stream.models.includes(chunk.model)) out.stream.models.push(chunk.model);
  for (const c of chunk.choices) {
    out.stream.text += c.delta.content ?? '';
    if (c.finish_reason) out.stream.finish = c.finish_reason;
  }
  if (chunk.usage) out.stream.usage = chunk.usage;
}

// Seeded sampling repeats too: whole, streamed, and cut by a stop string.
const sampling = { model, messages, max_tokens: 8, temperature: 1, seed: 5 };
const sampled = await client.chat.completions.create(sampling);
out.sampled = { text: sampled.choices[0].message.content, streamed: '' };
for await (const chunk of await client.chat.completions.create({ ...sampling, stream: true })) {
  for (const c of chunk.choices) out.sampled.streamed += c.delta.content ?? '';
}
const stopped = await client.chat.completions.create({ ...sampling, stop: [process.env.HONE_STOP, 'never said'] });
out.stopped = { text: stopped.choices[0].message.content, finish: stopped.choices[0].finish_reason, streamed: '' };
for await (const chunk of await client.chat.completions.create({ ...sampling, stop: process.env.HONE_STOP, stream: true })) {
  for (const c of chunk.choices) out.stopped.streamed += c.delta.content ?? '';
}

const completion = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
out.completion = { object: completion.object, text: completion.choices[0].text, finish: completion.choices[0].finish_reason,
  usage: completion.usage };

const textStream = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 4, temperature: 0, stream: true });
out.textStream = { text: '', finish: null };
for await (const chunk of textStream) {
  for (const c of chunk.choices) {
    out.textStream.text += c.text;
    if (c.finish_reason) out.textStream.finish = c.finish_reason;
  }
}

try {
  await client.chat.completions.create({ model: 'main.demo.nope', messages });
  out.missing = { status: 200 };
} catch (e) {
  out.missing = { status: e.status, code: e.code, type: e.type, message: e.message };
}
try {
  await client.completions.create({ model: 'no-such-endpoint', prompt: 'hi' });
  out.missingEndpoint = { status: 200 };
} catch (e) {
  out.missingEndpoint = { status: e.status, code: e.code, type: e.type, message: e.message };
}
try {
  await new OpenAI({ baseURL: process.env.HONE_BASE_URL, apiKey: 'wrong', maxRetries: 0 }).models.list();
  out.unauthorized = { status: 200 };
} catch (e) {
  out.unauthorized = { status: e.status, code: e.code };
}
try {
  await client.chat.completions.create({ model, messages, n: 2 });
  out.twoChoices = { status: 200 };
} catch (e) {
  out.twoChoices = { status: e.status, message: e.message };
}

console.log(JSON.stringify(out));
