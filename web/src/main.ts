import 'quasar/src/css/index.sass';
import './app.css';

import { createPinia } from 'pinia';
import { Dark, Dialog, Notify, Quasar } from 'quasar';
import iconSet from 'quasar/icon-set/svg-material-icons';
import { createApp } from 'vue';

import App from './App.vue';
import { router } from './router';

const app = createApp(App);
app.use(Quasar, {
  plugins: { Dark, Dialog, Notify },
  iconSet,
  config: { dark: 'auto' },
});
app.use(createPinia());
app.use(router);
app.mount('#app');

// Dark mode: the saved choice, else the system's.
const saved = localStorage.getItem('pa.dark');
Dark.set(saved === null ? 'auto' : saved === 'true');

if ('serviceWorker' in navigator && import.meta.env.PROD) {
  window.addEventListener('load', () => {
    navigator.serviceWorker.register('/sw.js').catch(() => undefined);
  });
}
