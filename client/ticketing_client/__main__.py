from ticketing_client.main import main

main()
