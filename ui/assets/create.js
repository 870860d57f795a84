// Create: the run form. "Check data" runs the server's validation (the
// same checks as creating, data included) and shows the report; only a
// request that passed, unchanged since, can be queued.
import { get, post, enc } from './api.js';
import { h, fill, errorBox } from './dom.js';
import { reportView } from './report.js';

function field(id, label, input, hint) {
  const hintId = hint ? id + '-hint' : null;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint && h('p', { class: 'hint', id: hintId }, hint));
}

const text = (name, attrs = {}) => h('input', { type: 'text', name, autocomplete: 'off', spellcheck: 'false', ...attrs });
const number = (name, attrs = {}) => h('input', { type: 'number', name, inputmode: 'numeric', min: 0, ...attrs });

// request turns the form into a CreateRunRequest, leaving unset fields out
// so the server's defaults apply.
function request(form) {
  const f = new FormData(form);
  const s = (k) => (f.get(k) || '').toString().trim();
  const n = (k) => (s(k) === '' ? undefined : Number(s(k)));
  const req = {
    model: s('model'), train_data_path: s('train_data_path'), register_to: s('register_to'), task_type: s('task_type'),
    training_duration: s('training_duration') || undefined, learning_rate: n('learning_rate'), context_length: n('context_length'),
    eval_data_path: s('eval_data_path') || undefined, experiment_path: s('experiment_path') || undefined,
    batch_rows: n('batch_rows'), grad_accum: n('grad_accum'), checkpoint_every: n('checkpoint_every'),
    keep_checkpoints: n('keep_checkpoints'), seed: n('seed'), precision: s('precision') || undefined,
  };
  const prompts = s('eval_prompts').split('\n').map((p) => p.trim()).filter(Boolean);
  if (prompts.length) req.eval_prompts = prompts;
  if (s('method') === 'lora') {
    req.method = 'lora';
    const targets = s('lora_targets').split(',').map((t) => t.trim()).filter(Boolean);
    const lora = JSON.parse(JSON.stringify({ rank: n('lora_rank'), alpha: n('lora_alpha'), dropout: n('lora_dropout'),
      target_modules: targets.length ? targets : undefined, use_rslora: f.get('lora_rslora') ? true : undefined }));
    if (Object.keys(lora).length) req.lora = lora;
    req.adapter_path = s('adapter_path') || undefined;
    req.register_adapter = f.get('register_adapter') ? true : undefined;
  }
  return JSON.parse(JSON.stringify(req)); // drops the undefined fields
}

// methodFields is the training-method choice and the LoRA settings, shown
// only while LoRA is chosen.
function methodFields() {
  const checkbox = (id, name, label) => h('div', { class: 'field check' },
    h('input', { type: 'checkbox', id, name, value: 'on' }), h('label', { for: id }, label));
  const lora = h('div', { class: 'grid', hidden: true },
    field('f-lora-rank', 'LoRA rank', number('lora_rank', { min: 1, max: 1024, placeholder: '16' })),
    field('f-lora-alpha', 'LoRA alpha', text('lora_alpha', { inputmode: 'decimal', placeholder: '32' }), 'Scales the adapter by alpha/rank.'),
    field('f-lora-dropout', 'LoRA dropout', text('lora_dropout', { inputmode: 'decimal', placeholder: '0.05' })),
    field('f-lora-targets', 'Target modules', text('lora_targets', { placeholder: 'q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj' })),
    checkbox('f-lora-rslora', 'lora_rslora', 'rsLoRA scaling (alpha/√rank)'),
    field('f-adapter', 'Continue adapter', text('adapter_path', { placeholder: 'optional PEFT adapter directory' }),
      'Its adapter_config.json sets rank, alpha and targets.'),
    checkbox('f-register-adapter', 'register_adapter', 'Register the adapter alone (instead of the merged model)'));
  const method = h('select', { name: 'method' }, h('option', { value: '' }, 'Full fine-tuning (default)'),
    h('option', { value: 'lora' }, 'LoRA (adapter on a frozen base)'));
  method.addEventListener('change', () => { lora.hidden = method.value !== 'lora'; });
  return h('fieldset', {}, h('legend', {}, 'Method'),
    field('f-method', 'Training method', method, 'LoRA trains a low-rank adapter and keeps no gradients or optimizer state for the base.'), lora);
}

export function createPage(main) {
  const models = h('datalist', { id: 'model-list' });
  get('/api/models').then((r) => models.append(...(r.models || []).filter((m) => m.trainable)
    .map((m) => h('option', { value: m.name }, `${m.name} (${m.license}, ${m.max_context} tokens)`))), () => {});
  const result = h('section', { 'aria-labelledby': 'report-title', class: 'report-box', hidden: true });
  const queue = h('button', { type: 'button', class: 'primary', hidden: true }, 'Queue run');
  let checked = null; // the request the shown report is for
  const form = h('form', { class: 'create', novalidate: false },
    h('fieldset', {}, h('legend', {}, 'Model and data'),
      field('f-model', 'Base model', text('model', { required: true, list: 'model-list', placeholder: 'meta-llama/Llama-3.2-1B-Instruct' }),
        'A supported Hugging Face id in the local cache, a local model directory, or a registered version (main.demo.bot/2, main.demo.bot@champion).'),
      models,
      field('f-task', 'Task type', h('select', { name: 'task_type' },
        h('option', { value: 'CHAT_COMPLETION' }, 'Chat completion'),
        h('option', { value: 'INSTRUCTION_FINETUNE' }, 'Instruction fine-tuning'),
        h('option', { value: 'CONTINUED_PRETRAIN' }, 'Continued pretraining'))),
      field('f-train', 'Training data path', text('train_data_path', { required: true, placeholder: '/data/train.jsonl' }),
        'A .jsonl file, a folder of .txt files (continued pretraining), a Parquet file or folder, a Hugging Face dataset folder or cached id, a Delta table, or a /Volumes/... path; inside a data root of the server.'),
      field('f-eval', 'Eval data path', text('eval_data_path', { placeholder: 'optional' })),
      field('f-prompts', 'Eval prompts', h('textarea', { name: 'eval_prompts', rows: 3, placeholder: 'One per line; answered at each checkpoint' }))),
    h('fieldset', {}, h('legend', {}, 'Training'),
      field('f-duration', 'Training duration', text('training_duration', { placeholder: '1ep' }), 'Epochs (3ep), batches (500ba) or tokens (2_000_000tok).'),
      field('f-lr', 'Learning rate', text('learning_rate', { inputmode: 'decimal', placeholder: '1e-5' })),
      field('f-ctx', 'Context length', number('context_length', { placeholder: 'model default' }))),
    methodFields(),
    h('fieldset', {}, h('legend', {}, 'Registration'),
      field('f-register', 'Register to', text('register_to', { required: true, placeholder: 'main.demo or main.demo.bot' }),
        'catalog.schema (the model is named after the run) or catalog.schema.model; the schema must exist.'),
      field('f-exp', 'Experiment path', text('experiment_path', { placeholder: '/Users/<you>/hone' }))),
    h('details', {}, h('summary', {}, 'Advanced settings'),
      h('div', { class: 'grid' },
        field('f-batch', 'Batch rows', number('batch_rows')),
        field('f-accum', 'Gradient accumulation', number('grad_accum')),
        field('f-ckevery', 'Checkpoint every (steps)', number('checkpoint_every')),
        field('f-keep', 'Keep checkpoints', number('keep_checkpoints')),
        field('f-seed', 'Seed', number('seed')),
        field('f-precision', 'Precision', h('select', { name: 'precision' }, h('option', { value: '' }, 'fp32 (default)'), h('option', { value: 'bf16' }, 'bf16'))))),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Check data'), queue));
  const msg = h('div', { 'aria-live': 'polite' });
  main.append(h('h1', {}, 'Create a run'),
    h('p', { class: 'muted' }, 'Check the data first: the report shows counts, warnings and any file:line errors before the run is queued.'),
    form, msg, result);

  form.addEventListener('input', () => {
    if (checked && JSON.stringify(request(form)) !== JSON.stringify(checked)) {
      queue.hidden = true;
      result.classList.add('stale');
      msg.replaceChildren(h('p', { class: 'muted' }, 'The form changed: check the data again before queueing.'));
    }
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    const req = request(form);
    msg.replaceChildren(h('p', { class: 'muted' }, 'Checking the data…'));
    queue.hidden = true;
    try {
      const v = await post('/api/runs/validate', req);
      checked = req;
      result.classList.remove('stale');
      result.hidden = false;
      fill(result,
        h('h2', { id: 'report-title', tabindex: -1 }, v.ok ? 'Data report: ready to queue' : 'Data report: refused'),
        v.ok ? null : h('p', { class: 'error', role: 'alert' }, v.error),
        reportView(v.report ?? null));
      msg.replaceChildren();
      queue.hidden = !v.ok;
      (v.ok ? queue : result.querySelector('h2')).focus();
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  });
  queue.addEventListener('click', async () => {
    queue.disabled = true;
    try {
      const run = await post('/api/runs', checked);
      location.hash = '#/runs/' + enc(run.name);
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    } finally {
      queue.disabled = false;
    }
  });
}
