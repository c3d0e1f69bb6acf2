package postgres_test

import (
	"fmt"
	"testing"

	"polydev/internal/store"
	"polydev/internal/store/postgres"
)

// TestMigrateAsCreateroleOwner runs the migrations as a schema owner that
// is not a superuser but has CREATEROLE, as on Supabase (the postgres
// role) or a managed PostgreSQL: handing free_port to polydev_egress needs
// the owner to make itself a member first, which the migration does. The
// store then allocates ports through the function.
func TestMigrateAsCreateroleOwner(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	n := shared.n.Add(1)
	owner, db := fmt.Sprintf("owner_%d", n), fmt.Sprintf("t%d_createrole_owner", n)
	c.Psql(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN CREATEROLE NOSUPERUSER", owner))
	c.Psql(t, "postgres", fmt.Sprintf(`CREATE DATABASE "%s" OWNER %s`, db, owner))
	ownerDSN := c.SuperuserDSN() + " dbname=" + db + " user=" + owner
	if _, _, err := postgres.Migrate(t.Context(), ownerDSN, nil); err != nil {
		t.Fatalf("Migrate as a CREATEROLE owner: %v", err)
	}
	if got := c.Psql(t, db, "select pg_get_userbyid(proowner) from pg_proc where oid = 'polydev_egress.free_port(int, int)'::regprocedure"); got != "polydev_egress\n" {
		t.Errorf("free_port is owned by %q; want polydev_egress", got)
	}
	st := open(t, c.SuperuserDSN()+" dbname="+db+" user="+appLogin)
	if err := st.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	u := &store.User{Email: "createrole@example.test", KDFParams: []byte("{}"), AuthHash: []byte{1}, AuthSalt: []byte{2}}
	if err := st.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	r := store.PortRange{Base: 10001, Size: 10}
	if _, err := st.LinkProviderToken(t.Context(), u.ID, &store.ProviderToken{Provider: "openai", EncryptedRefreshToken: "x"}, r); err != nil {
		t.Fatal(err)
	}
	if _, tok, err := st.RotateEgress(t.Context(), u.ID, "openai", r, u.CreatedAt); err != nil || tok.EgressPort != 10010 {
		t.Errorf("RotateEgress through free_port: %+v, %v; want port 10010", tok, err)
	}
}
