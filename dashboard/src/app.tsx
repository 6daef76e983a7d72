import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, clearToken, getToken, setToken, setUnauthenticatedHandler } from './api';
import { useRoute } from './hooks';
import { Toasts } from './toast';
import { Fleet } from './views/fleet';
import { CreateRuntime } from './views/create';
import { RuntimePage } from './views/runtime';
import { Usage } from './views/usage';
import { SecretsPage } from './views/secrets';

export function App() {
  const [token, setTok] = useState<string | null>(getToken());
  const [notice, setNotice] = useState<string | null>(null);
  useEffect(() => {
    setUnauthenticatedHandler(() => {
      clearToken();
      setTok(null);
      setNotice('The daemon no longer accepts this token. Sign in again.');
    });
  }, []);
  if (!token) {
    return (
      <SignIn
        notice={notice}
        onSignIn={(t) => {
          setToken(t);
          setNotice(null);
          setTok(t);
        }}
      />
    );
  }
  return (
    <Shell
      token={token}
      onSignOut={() => {
        clearToken();
        setTok(null);
        setNotice('Signed out.');
        history.replaceState(null, '', location.pathname);
      }}
    />
  );
}

function Logo() {
  return (
    <svg class="logo" viewBox="0 0 32 32" aria-hidden="true">
      <rect width="32" height="32" rx="7" fill="currentColor" />
      <path
        d="M9 23V9h7.5a4.5 4.5 0 0 1 1.2 8.84L22.5 23h-3.6l-4.2-5H12.3v5z M12.3 15.2h4a1.9 1.9 0 0 0 0-3.8h-4z"
        fill="#fff"
      />
    </svg>
  );
}

function SignIn({ notice, onSignIn }: { notice: string | null; onSignIn: (t: string) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => {
    document.title = 'Sign in · Runta';
    input.current?.focus();
  }, []);
  const submit = async (e: Event) => {
    e.preventDefault();
    const t = value.trim();
    if (!/^rt_[a-z0-9]{20,128}$/.test(t)) {
      setError('Tokens look like rt_ followed by lowercase letters and digits.');
      input.current?.focus();
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await api.verify(t);
      onSignIn(t);
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? 'The daemon does not accept this token.'
          : err instanceof Error
            ? err.message
            : String(err),
      );
      input.current?.focus();
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <form class="signin-card" onSubmit={submit} noValidate>
        <div class="brand brand-lg">
          <Logo />
          <span>Runta</span>
        </div>
        <h1>Sign in</h1>
        <p class="muted">Paste a tenant token. It stays in this browser tab only and is forgotten when the tab closes.</p>
        {notice && <p class="notice">{notice}</p>}
        <label for="token">Tenant token</label>
        <input
          ref={input}
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          spellcheck={false}
          placeholder="rt_…"
          value={value}
          aria-invalid={error ? 'true' : undefined}
          aria-describedby={error ? 'token-error' : 'token-help'}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)}
        />
        {error ? (
          <p id="token-error" class="field-error" role="alert">
            {error}
          </p>
        ) : (
          <p id="token-help" class="hint">
            An operator creates one with <code>runta token create --tenant NAME</code>.
          </p>
        )}
        <button type="submit" class="btn btn-primary btn-block" disabled={busy}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

function Shell({ token, onSignOut }: { token: string; onSignOut: () => void }) {
  const route = useRoute();
  const main = useRef<HTMLElement>(null);
  const first = useRef(true);
  useEffect(() => {
    // Move focus to the new page for keyboard and screen-reader users.
    if (first.current) first.current = false;
    else main.current?.focus({ preventScroll: true });
    scrollTo(0, 0);
  }, [route]);

  let page;
  let section = 'fleet';
  const m = route.match(/^\/runtimes\/([^/]+)$/);
  if (route === '/' || route === '/runtimes') page = <Fleet />;
  else if (route === '/new') {
    page = <CreateRuntime />;
    section = 'new';
  } else if (route === '/usage') {
    page = <Usage />;
    section = 'usage';
  } else if (route === '/secrets') {
    page = <SecretsPage />;
    section = 'secrets';
  } else if (m) page = <RuntimePage key={m[1]} name={decodeURIComponent(m[1])} />;
  else
    page = (
      <div class="empty">
        <h1>Not found</h1>
        <p>
          <a href="#/">Back to the fleet</a>
        </p>
      </div>
    );

  const link = (href: string, id: string, label: string) => (
    <a href={href} class={`nav-link${section === id ? ' active' : ''}`} aria-current={section === id ? 'page' : undefined}>
      {label}
    </a>
  );
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); main.current?.focus(); }}>
        Skip to content
      </a>
      <header class="topbar">
        <a class="brand" href="#/" aria-label="Runta home">
          <Logo />
          <span>Runta</span>
        </a>
        <nav aria-label="Main">
          {link('#/', 'fleet', 'Runtimes')}
          {link('#/usage', 'usage', 'Usage')}
          {link('#/secrets', 'secrets', 'Secrets')}
        </nav>
        <div class="topbar-end">
          <a href="#/new" class="btn btn-primary btn-sm">
            + New runtime
          </a>
          <span class="whoami" title="Signed in with this token">
            {token.slice(0, 7)}…
          </span>
          <button type="button" class="btn btn-ghost btn-sm" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1} class="content">
        {page}
      </main>
      <Toasts />
    </>
  );
}
