// What the build refuses to ship (see build.mjs).

/** The whole permission set, so a widened manifest fails the build instead of shipping. */
export const ALLOWED_PERMISSIONS = ['storage', 'tabs', 'scripting', 'alarms'];

export function checkManifest(manifest, exists) {
  const problems = [];
  if (manifest.manifest_version !== 3) problems.push('manifest_version must be 3');
  for (const key of ['name', 'version', 'description']) if (!manifest[key]) problems.push(`${key} is missing`);
  if (!/^\d+(\.\d+){0,3}$/.test(manifest.version ?? '')) problems.push(`version ${manifest.version} is not 1-4 dot-separated integers`);
  for (const p of manifest.permissions ?? []) if (!ALLOWED_PERMISSIONS.includes(p)) problems.push(`permission ${p} is not one this extension asks for`);
  const files = [manifest.background?.service_worker, manifest.options_ui?.page, manifest.action?.default_popup].filter(Boolean);
  if (!manifest.background?.service_worker) problems.push('no background service worker');
  for (const f of files) if (!exists(f)) problems.push(`${f} is referenced but missing`);
  if (manifest.content_security_policy) problems.push('no custom content_security_policy (the MV3 default forbids remote code)');
  return problems;
}

