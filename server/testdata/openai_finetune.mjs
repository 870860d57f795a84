// Drives hone's OpenAI fine-tuning API with the official openai npm client,
// as a user's script would: upload JSONL files, create a job, follow it to
// its end, list its events and checkpoints, chat with the fine-tuned
// model; then the refusals. Prints what it saw as one JSON object for
// TestOpenAIFineTuning to check. Environment: OPENAI_MODULE, HONE_BASE_URL,
// HONE_TOKEN, HONE_MODEL (the base model), HONE_TRAIN, HONE_EVAL (JSONL).
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';

const mod = await import(pathToFileURL(process.env.OPENAI_MODULE).href);
const { default: OpenAI, toFile } = mod;
const client = new OpenAI({ baseURL: process.env.HONE_BASE_URL, apiKey: process.env.HONE_TOKEN, maxRetries: 0 });
const out = {};

async function failure(fn) {
  try {
    await fn();
    return { status: 0 };
  } catch (e) {
    return { status: e.status, code: e.code ?? null, type: e.type ?? null, param: e.param ?? null, message: e.message };
  }
}

const train = await client.files.create({ file: fs.createReadStream(process.env.HONE_TRAIN), purpose: 'fine-tune' });
const valid = await client.files.create({ file: await toFile(fs.readFileSync(process.env.HONE_EVAL), 'eval.jsonl'), purpose: 'fine-tune' });
out.train = train;
out.retrieved = await client.files.retrieve(train.id);
out.files = [];
for await (const f of client.files.list()) out.files.push(f.id);

const job = await client.fineTuning.jobs.create({
  model: process.env.HONE_MODEL, training_file: train.id, validation_file: valid.id, suffix: 'demo', seed: 5,
  method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 1, batch_size: 8, learning_rate_multiplier: 'auto' } } },
});
out.created = job;

// Follow the job as the OpenAI documentation does: poll it and print new
// events (oldest first) until it ends.
const seen = new Set();
out.followed = [];
out.statuses = [];
let current = job;
for (let i = 0; i < 1200; i++) {
  current = await client.fineTuning.jobs.retrieve(job.id);
  if (out.statuses.at(-1) !== current.status) out.statuses.push(current.status);
  const page = await client.fineTuning.jobs.listEvents(job.id, { limit: 50 });
  for (const e of [...page.data].reverse()) {
    if (!seen.has(e.id)) {
      seen.add(e.id);
      out.followed.push({ id: e.id, object: e.object, level: e.level, message: e.message, type: e.data?.type });
    }
  }
  if (['succeeded', 'failed', 'cancelled'].includes(current.status)) break;
  await new Promise((r) => setTimeout(r, 250));
}
out.finished = current;
out.events = [];
for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 2 })) out.events.push(e.id);
out.checkpoints = [];
for await (const c of client.fineTuning.jobs.checkpoints.list(job.id, { limit: 1 })) {
  out.checkpoints.push({ id: c.id, object: c.object, step: c.step_number, job: c.fine_tuning_job_id, metrics: c.metrics });
}

if (current.fine_tuned_model) {
  const chat = await client.chat.completions.create({ model: current.fine_tuned_model,
    messages: [{ role: 'user', content: 'What is 12 + 30?' }], max_tokens: 8, temperature: 0 });
  out.chat = { model: chat.model, text: chat.choices[0].message.content, finish: chat.choices[0].finish_reason };
}

// A second job, with the older top-level hyperparameters, cancelled.
const second = await client.fineTuning.jobs.create({ model: process.env.HONE_MODEL, training_file: train.id,
  hyperparameters: { n_epochs: 3 } });
out.cancelled = await client.fineTuning.jobs.cancel(second.id);
out.jobs = [];
for await (const j of client.fineTuning.jobs.list({ limit: 1 })) out.jobs.push(j.id);

out.refused = {
  dpo: await failure(() => client.fineTuning.jobs.create({ model: process.env.HONE_MODEL, training_file: train.id,
    method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.1 } } } })),
  noFile: await failure(() => client.fineTuning.jobs.create({ model: process.env.HONE_MODEL, training_file: 'file-000000000000000000000000' })),
  epochs: await failure(() => client.fineTuning.jobs.create({ model: process.env.HONE_MODEL, training_file: train.id,
    hyperparameters: { n_epochs: 0 } })),
  integrations: await failure(() => client.fineTuning.jobs.create({ model: process.env.HONE_MODEL, training_file: train.id,
    integrations: [{ type: 'wandb', wandb: { project: 'x' } }] })),
  purpose: await failure(async () => client.files.create({ file: await toFile(Buffer.from('{}\n'), 'x.jsonl'), purpose: 'assistants' })),
  missingJob: await failure(() => client.fineTuning.jobs.retrieve('ftjob-nope')),
};
// A file whose third line is not JSON: the job is refused naming the file and line.
const bad = await client.files.create({ file: await toFile(Buffer.from(fs.readFileSync(process.env.HONE_TRAIN, 'utf8').split('\n').slice(0, 2).join('\n') + '\n{"messages": [\n'), 'bad.jsonl'), purpose: 'fine-tune' });
out.refused.badData = await failure(() => client.fineTuning.jobs.create({ model: process.env.HONE_MODEL, training_file: bad.id }));
out.refused.badData.file = bad.id;
await client.files.delete(bad.id);
out.deleted = await client.files.delete(valid.id);
out.afterDelete = await failure(() => client.files.retrieve(valid.id));
console.log(JSON.stringify(out));
