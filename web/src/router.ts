import { createRouter, createWebHistory } from 'vue-router';

import { useAuth } from '@/stores/auth';

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: '/', component: () => import('@/pages/ChatPage.vue') },
    { path: '/chat/:id', component: () => import('@/pages/ChatPage.vue'), props: true },
    { path: '/auth/callback', component: () => import('@/pages/CallbackPage.vue'), meta: { public: true } },
    { path: '/login', component: () => import('@/pages/LoginPage.vue'), meta: { public: true } },
    { path: '/settings/:tab?', component: () => import('@/pages/SettingsPage.vue') },
    { path: '/admin/:tab?', component: () => import('@/pages/AdminPage.vue'), meta: { admin: true } },
    { path: '/:rest(.*)*', component: () => import('@/pages/NotFoundPage.vue'), meta: { public: true } },
  ],
});

router.beforeEach(async (to) => {
  const auth = useAuth();
  try {
    await auth.loadConfig();
  } catch {
    return to.path === '/login' ? true : { path: '/login', query: { error: 'gateway' } };
  }
  if (to.meta.public) return true;
  if (auth.mode === 'disabled') return { path: '/login' };
  if (auth.mode === 'oidc' && !auth.tokens) return { path: '/login', query: { next: to.fullPath } };
  return true;
});
