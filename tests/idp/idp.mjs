// The OpenID provider Slipway's tests sign in through: oidc-provider with its
// development login and consent forms (any password is accepted).
//
//   node tests/idp/idp.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
//
// The issuer is http://127.0.0.1:PORT; discovery is at
// /.well-known/openid-configuration. Accounts: `tim` (groups ["management"])
// and `amita` (groups ["qa"]); any other login name is an account without
// groups. Authorization code flow only, PKCE (S256) required, the `groups`
// claim in the ID token.
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
if (!port || !clientId || !clientSecret || !redirectUri) {
  console.error('usage: node idp.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI');
  process.exit(2);
}

const accounts = {
  tim: { name: 'Tim Kowalski', email: 'tim@tailspin.example', groups: ['management'] },
  amita: { name: 'Amita Rao', email: 'amita@tailspin.example', groups: ['qa'] },
};

const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // Every authorization request must carry an S256 code challenge.
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  // Put the scope-granted claims (groups, preferred_username) into the ID
  // token itself, not only into the userinfo answer.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['slipway-test-idp-cookie-key'] },
  async findAccount(_ctx, id) {
    const known = accounts[id] ?? { name: id, email: `${id}@example.invalid`, groups: [] };
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          name: known.name,
          email: known.email,
          email_verified: true,
          groups: known.groups,
        };
      },
    };
  },
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`test idp listening on ${issuer}`);
});
