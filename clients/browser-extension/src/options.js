// The consent and enrollment page: nothing connects until the box is ticked and the form sent.

const $ = (id) => document.getElementById(id);

async function ask(message) {
  const answer = await chrome.runtime.sendMessage(message);
  if (!answer?.ok) throw new Error(answer?.error ?? 'the extension did not answer');
  return answer.value;
}

async function refresh() {
  const s = await ask({ type: 'status' });
  $('status').textContent = `Status: ${s.status}${s.detail ? ` (${s.detail})` : ''}`;
  $('status').dataset.status = s.status;
  const enrolled = Boolean(s.device_id);
  $('connect').hidden = enrolled;
  $('forget').hidden = !enrolled;
  if (s.gateway) $('gateway').value = s.gateway;
}

$('consent').addEventListener('change', () => {
  $('submit').disabled = !$('consent').checked;
});

$('connect').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('error').textContent = '';
  $('submit').disabled = true;
  try {
    await ask({ type: 'enroll', gateway: $('gateway').value, code: $('code').value, name: $('name').value, consent: $('consent').checked });
  } catch (err) {
    $('error').textContent = err.message;
  } finally {
    $('submit').disabled = !$('consent').checked;
    await refresh();
  }
});

$('forget').addEventListener('click', async () => {
  await ask({ type: 'forget' });
  await refresh();
});

refresh().catch((err) => ($('error').textContent = err.message));
setInterval(() => refresh().catch(() => {}), 1000);
